"""Multi-task medical image pipeline: DVC stages, Ray Train and Tune jobs, MLflow tracking and registry."""
