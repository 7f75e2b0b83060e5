"""Registry fixtures: one real SQLite MLflow store per module, a small fitted bank pipeline."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.data.contract import check_contract
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.settings import Spec, load_spec
from ct_platform.training.fit import fit_pipeline
from ct_platform_tests.conftest import BANK_SPEC


@pytest.fixture(scope="session")
def bank_spec() -> Spec:
    return load_spec(BANK_SPEC)


@pytest.fixture(scope="session")
def train_frame(bank_frame: pd.DataFrame, bank_spec: Spec) -> pd.DataFrame:
    """The newest 3,000 cleaned bank rows: enough for a real model, quick to fit.

    (The oldest rows would do too, but none of them has a previous contact: pdays is all
    NaN there, which an imputing pipeline drops with a warning.)
    """
    result = check_contract(bank_frame.iloc[-3000:].reset_index(drop=True), bank_spec.dataset)
    assert result.clean is not None, [rule.message for rule in result.failed]
    return result.clean


@pytest.fixture(scope="session")
def fitted(train_frame: pd.DataFrame, bank_spec: Spec) -> Pipeline:
    return fit_pipeline(train_frame, bank_spec)


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store shared by the session's tests: creating one costs seconds of migrations."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def registry(tracking_uri: str, request: pytest.FixtureRequest) -> ModelRegistry:
    """A registry on the shared store, with a model name of its own (tests stay independent)."""
    model_name = re.sub(r"\W+", "_", request.node.name)
    return ModelRegistry(tracking_uri, model_name, experiment="ct-tests")


def log(registry: ModelRegistry, model: Pipeline, train: pd.DataFrame, fingerprint: str):
    """log_candidate with the arguments the training asset passes."""
    return registry.log_candidate(
        model,
        train=train,
        params={"estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "max_iter": 150},
        metrics={"roc_auc": 0.79, "accuracy": 0.9},
        fingerprint=fingerprint,
        dagster_run_id="dagster-run-1",
        tags={"ct.batches": "b-0001,b-0002"},
    )


def artifact_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())
