"""What the platform knows of a registered model version; importing it never imports mlflow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ct_platform.settings import Spec

# The registry's lifecycle aliases: the newest candidate, and the version that serves.
CHALLENGER = "challenger"
CHAMPION = "champion"
# The version a progressive rollout is bringing in (any strategy but `direct`); it becomes
# `champion` when the rollout completes and loses the alias when it is rolled back.
CANARY = "canary"


def release_alias(spec: Spec) -> str:
    """The alias a newly promoted version gets: `champion` at once for `direct`, else
    `canary` until its rollout completes (the rollout controller then moves `champion`)."""
    return CHAMPION if spec.deployment.strategy == "direct" else CANARY


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
# Run tag prefix: how the named holdout metric's confidence interval was computed
# (`training.comparison.metric_interval`), e.g. `ct.interval.holdout_accuracy=wilson`.
INTERVAL_TAG_PREFIX = "ct.interval."


@dataclass(frozen=True)
class RunRecord:
    """What one read of a run gives besides its metrics: parameters, tags (as text) and the
    MLflow UI page of its artifacts."""

    params: dict[str, str]
    tags: dict[str, str]
    artifacts_url: str


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
