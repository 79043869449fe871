"""Data: labelled source corpora, prompts, continuations, labels and value-training files."""
