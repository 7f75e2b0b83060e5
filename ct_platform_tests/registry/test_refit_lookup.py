"""A whole-window refit next to its holdout fit in a real MLflow registry: lookups by
fingerprint never confuse the two, a killed promotion stays pending until done, and a
refit that learned from the candidate's holdout is not the one scored there."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.pipeline import Pipeline

from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.registry.versions import CHAMPION, FIT_TAG, REFIT_OF_TAG
from ct_platform.settings import Spec
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.evaluation_run import champion_comparator
from ct_platform.training.promotion import GATES_PASSED_TAG, PromotionRefused, promote
from ct_platform.training.refit import (
    HOLDOUT_METRICS_OF_TAG,
    inherited_verdict,
    promotion_pending,
)

FINGERPRINT = "f" * 64


def register(registry: ModelRegistry, model: Pipeline, train: pd.DataFrame, **tags: str):
    return registry.log_candidate(
        model,
        train=train,
        params={},
        metrics={},
        fingerprint=FINGERPRINT,
        dagster_run_id="dagster-run-1",
        tags={"ct.batches": "b-0001,b-0002", **tags},
    )


def window_ending(batch: str) -> TrainingSetRef:
    return TrainingSetRef("0" * 64, ("b-0001", batch), Path("/nowhere"), 10, 2, Path("/x"))


def test_refit_lookup_pending_promotion_and_comparator(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame, spec: Spec
) -> None:
    holdout_fit = register(registry, fitted, train_frame, **{FIT_TAG: "holdout_split"})
    registry.set_tags(holdout_fit.version, {GATES_PASSED_TAG: "true"})
    holdout_fit = registry.version(holdout_fit.version)
    # Killed between the verdict and the refit: pending.
    assert registry.find_refit(holdout_fit) is None
    assert promotion_pending(registry, holdout_fit)

    refit = register(
        registry,
        fitted,
        train_frame,
        **{FIT_TAG: "whole_window", REFIT_OF_TAG: str(holdout_fit.version)},
    )
    # Same fingerprint: the lookup by fingerprint finds the holdout fit, never the refit.
    assert registry.find_version_by_fingerprint(FINGERPRINT).version == holdout_fit.version
    assert registry.find_refit(holdout_fit).version == refit.version
    # Killed before the refit's verdict, then before its promotion: still pending.
    assert promotion_pending(registry, holdout_fit)
    registry.set_tags(refit.version, {GATES_PASSED_TAG: "true"})
    assert promotion_pending(registry, holdout_fit)

    promote(registry, refit.version, spec, dagster_run_id="dagster-run-2")
    assert registry.alias_version(CHAMPION).version == refit.version
    assert not promotion_pending(registry, holdout_fit)
    # Rolled back to an older version: the refit promoted once is not promoted again.
    set_champion(registry, holdout_fit.version, spec)
    assert not promotion_pending(registry, holdout_fit)
    # Nor by a rerun of an old champion step: the rollback sticks.
    with pytest.raises(PromotionRefused, match="was promoted before"):
        promote(registry, refit.version, spec, dagster_run_id="dagster-run-3")
    assert registry.alias_version(CHAMPION).version == holdout_fit.version
    set_champion(registry, refit.version, spec)

    # The serving refit learned from b-0001 and b-0002. A candidate window sharing any batch
    # with it (its holdout may reach back into b-0001 when the newest batch is small) meets
    # the refit's holdout fit instead; only a window of entirely new batches meets the refit.
    assert champion_comparator(registry, window_ending("b-0002")).version == holdout_fit.version
    assert champion_comparator(registry, window_ending("b-0003")).version == holdout_fit.version
    new_window = TrainingSetRef("0" * 64, ("b-0003", "b-0004"), Path("/nowhere"), 10, 2, Path("/x"))
    assert champion_comparator(registry, new_window).version == refit.version


def test_version_tags_are_written_with_the_version_and_not_on_its_run(
    registry: ModelRegistry, fitted: Pipeline, train_frame: pd.DataFrame
) -> None:
    """A refit's inherited verdict goes on the refit's version at registration (no tag
    transaction of its own later) and never on its run: the run did not judge anything."""
    holdout_fit = register(registry, fitted, train_frame, **{FIT_TAG: "holdout_split"})
    registry.set_tags(
        holdout_fit.version,
        {"ct.gate.metric_floor": "pass", "ct.gate.metric_floor.reason": "roc_auc 0.79 >= 0.7"},
    )
    holdout_fit = registry.version(holdout_fit.version)
    inherited = inherited_verdict(holdout_fit)
    assert inherited == {
        "ct.gate.metric_floor": "pass",
        "ct.gate.metric_floor.reason": "roc_auc 0.79 >= 0.7",
        HOLDOUT_METRICS_OF_TAG: str(holdout_fit.version),
    }
    refit = registry.log_candidate(
        fitted,
        train=train_frame,
        params={},
        metrics={},
        fingerprint=FINGERPRINT,
        dagster_run_id="dagster-run-1",
        tags={FIT_TAG: "whole_window", REFIT_OF_TAG: str(holdout_fit.version)},
        version_tags=inherited,
    )
    assert registry.version(refit.version).tags == {
        **inherited,
        "fingerprint": FINGERPRINT,
        "dagster.run_id": "dagster-run-1",
        "dagster.run_url": "http://127.0.0.1:3000/runs/dagster-run-1",
        FIT_TAG: "whole_window",
        REFIT_OF_TAG: str(holdout_fit.version),
    }
    run_tags = MlflowClient(registry.tracking_uri).get_run(refit.run_id).data.tags
    assert not [key for key in run_tags if key.startswith("ct.gate.")]
    assert HOLDOUT_METRICS_OF_TAG not in run_tags
    assert run_tags[REFIT_OF_TAG] == str(holdout_fit.version)
