"""Diagnostics that guide Q_D design choices (which backbone layer, how big a Q_D)."""
