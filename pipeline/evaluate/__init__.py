"""Evaluation of every balancer on the test split, the paired tests, the report and the strict comparison."""
