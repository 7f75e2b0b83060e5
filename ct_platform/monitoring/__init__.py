"""Monitoring: drift (fast check + Evidently reports), prediction-log reading, performance decay
and the retrain governor. Plain Python: no dagster imports here."""
