"""Deployment files of the pipeline; ``infra.local`` is importable so tests can start the team stack."""
