"""What the platform knows of a registered model version; importing it never imports mlflow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# The registry's lifecycle aliases: the newest candidate, and the version that serves.
CHALLENGER = "challenger"
CHAMPION = "champion"
# The Dagster run that logged an MLflow run or version (tag on both).
DAGSTER_RUN_TAG = "dagster.run_id"
# How a version was fitted: on the older part of its window (judged on the holdout), or on
# the whole window after that fit passed its gates (`training.refit`).
FIT_TAG = "ct.fit"
HOLDOUT_SPLIT = "holdout_split"
WHOLE_WINDOW = "whole_window"
# On a whole-window refit: the holdout fit whose verdict it inherits.
REFIT_OF_TAG = "ct.refit_of"
# The version's semantic version (`training.semver`).
SEMVER_TAG = "ct.semver"


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version, with its run's metrics: small, plain, safe to pass around."""

    name: str
    version: int
    run_id: str
    fingerprint: str | None
    metrics: dict[str, float]
    created_at: datetime
    aliases: list[str]
    tags: dict[str, str]

    @property
    def is_refit(self) -> bool:
        return self.tags.get(FIT_TAG) == WHOLE_WINDOW

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"
