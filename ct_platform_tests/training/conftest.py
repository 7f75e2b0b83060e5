"""Training fixtures: the bank demo as the data contract hands it over, split and fitted once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.pipeline import Pipeline

from ct_platform.data.contract import check_contract
from ct_platform.data.training_set import TrainingSet, build_training_set
from ct_platform.settings import LOWER_IS_BETTER, Spec, load_spec
from ct_platform.training.fit import fit_pipeline
from ct_platform_tests.conftest import BANK_SPEC

# The simulator lands the file in batches of this many rows.
BATCH_ROWS = 4000


@pytest.fixture(scope="session")
def bank_spec() -> Spec:
    """The bank spec as shipped; read-only, so shared by the whole session."""
    return load_spec(BANK_SPEC)


@pytest.fixture(scope="session")
def bank_window(bank_frame: pd.DataFrame, bank_spec: Spec) -> TrainingSet:
    """The training job's input once the whole file has landed: the newest window of
    4,000-row batches (the last one partial), each through the contract, split by time."""
    starts = range(0, len(bank_frame), BATCH_ROWS)
    landed = [bank_frame.iloc[start : start + BATCH_ROWS] for start in starts]
    cleaned = []
    for batch in landed[-bank_spec.evaluation.window_batches :]:
        result = check_contract(batch.reset_index(drop=True), bank_spec.dataset)
        assert result.clean is not None, [rule.message for rule in result.failed]
        cleaned.append(result.clean)
    return build_training_set(cleaned, bank_spec)


@pytest.fixture(scope="session")
def bank_model(bank_window: TrainingSet, bank_spec: Spec) -> Pipeline:
    return fit_pipeline(bank_window.train, bank_spec)


def _synthetic_spec_dict(task: str, estimator: str, primary_metric: str) -> dict:
    return {
        "dataset": {
            "name": f"synthetic_{task}",
            "target": "target",
            "task": task,
            "sensitive_column": "region",
            "min_rows": 50,
            "columns": {
                "x1": {"type": "float"},
                "x2": {"type": "float", "sentinels": [-1]},
                "region": {"type": "category", "categories": ["north", "south", "east"]},
            },
        },
        "model": {"name": f"synthetic_{task}", "estimator": estimator},
        "evaluation": {"primary_metric": primary_metric},
        "gates": {"metric_floor": {"threshold": 0.5}, **_metric_gap(primary_metric)},
    }


def _metric_gap(primary_metric: str) -> dict:
    # A gap of MAE or RMSE between groups is in the target's units: the spec must say it.
    return {"fairness": {"metric_gap": 0.5}} if primary_metric in LOWER_IS_BETTER else {}


@pytest.fixture
def synthetic_spec(tmp_path: Path) -> Callable[[str, str, str], Spec]:
    """Write a small spec YAML (x1, x2, region -> target) for a task and estimator; load it."""

    def make(task: str, estimator: str, primary_metric: str) -> Spec:
        path = tmp_path / f"{task}.yaml"
        path.write_text(yaml.safe_dump(_synthetic_spec_dict(task, estimator, primary_metric)))
        return load_spec(path)

    return make


def synthetic_frame(n_rows: int, n_classes: int | None, seed: int = 0) -> pd.DataFrame:
    """A cleaned frame for the synthetic spec: regression target, or `n_classes` labels."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n_rows)
    x2 = rng.normal(size=n_rows)
    region = rng.choice(["north", "south", "east"], size=n_rows)
    signal = 3 * x1 - 2 * x2 + np.where(region == "north", 1.5, 0.0)
    noisy = signal + rng.normal(scale=0.5, size=n_rows)
    x2[rng.random(n_rows) < 0.05] = np.nan  # sentinel rows, already NaN as the contract leaves them
    frame = pd.DataFrame({"x1": x1, "x2": x2, "region": pd.Series(region, dtype=object)})
    if n_classes is None:
        frame["target"] = noisy
    else:
        edges = np.quantile(noisy, np.linspace(0, 1, n_classes + 1)[1:-1])
        frame["target"] = np.searchsorted(edges, noisy).astype("int64")
    return frame
