"""Q_D training: data module, Lightning module, the Hydra-driven train() entry point."""
