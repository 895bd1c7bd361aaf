"""The team stack (PostgreSQL, S3, MLflow server with basic auth) as local processes, no containers."""
