"""Deployment: export the MLflow champion as a bundle, serve it locally or in Docker.

Imports neither dagster nor (until an export runs) mlflow.
"""

from ct_platform.deployment.endpoint import (
    DeploymentError,
    Endpoint,
    EndpointStatus,
    smoke_request,
    wait_healthy,
)
from ct_platform.deployment.export import export_champion_bundle, pointed_bundle
from ct_platform.deployment.targets import DeploymentTarget, ensure_running, target_for

__all__ = [
    "DeploymentError",
    "DeploymentTarget",
    "Endpoint",
    "EndpointStatus",
    "ensure_running",
    "export_champion_bundle",
    "pointed_bundle",
    "smoke_request",
    "target_for",
    "wait_healthy",
]
