"""Default locations of the pipeline's artifacts (the same paths ``dvc.yaml`` declares)."""

from pathlib import Path

DATA = Path("data")
INGESTED = DATA / "ingested"
SPLIT = DATA / "split"
PREPROCESSED = DATA / "preprocessed"
AUGMENTED = DATA / "augmented"
MODELS = Path("models")
METRICS = Path("metrics")
REPORTS = Path("reports")
EVALUATION = REPORTS / "evaluation"

MANIFEST = "manifest.json"
SPLIT_FILE = "split.json"
