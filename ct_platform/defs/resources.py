"""Resources: the MLflow registry, configured from the environment."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import dagster as dg

from ct_platform.settings import Spec

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry


class MlflowResource(dg.ConfigurableResource):
    """A thin handle on the MLflow tracking server and model registry.

    `tracking_uri` unset means MLFLOW_TRACKING_URI, else the SQLite store under CT_HOME.
    """

    tracking_uri: str | None = None

    def registry(self, spec: Spec) -> ModelRegistry:
        # Imported here so that loading the code location (webserver, daemon, sensors)
        # never pays for importing mlflow; only runs that talk to MLflow do.
        from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri

        return ModelRegistry(
            self.tracking_uri or default_tracking_uri(),
            model_name=spec.model.name,
            experiment=spec.dataset.name,
        )


def env_or_none(name: str) -> dg.EnvVar | None:
    """`EnvVar(name)` when the variable is set, so an unset one falls back to the default."""
    return dg.EnvVar(name) if os.environ.get(name) else None
