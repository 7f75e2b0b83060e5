"""The model server: bundle loading, MLflow + Open Inference Protocol v2 HTTP, prediction log.

Imports neither dagster, mlflow, evidently nor pandas: it runs in a slim image.
"""
