"""Data stages: ingest → split → preprocess → augment, and the fold views training reads."""
