"""Model registry: MLflow runs, versions, aliases (mlflow_registry); safe skops I/O (skops_types).

Imports nothing itself, so `skops_types` can be used without importing mlflow.
"""
