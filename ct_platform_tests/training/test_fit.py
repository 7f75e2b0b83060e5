"""fit_pipeline: fits the spec's pipeline, and refuses frames it cannot fit with a clear reason."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.data.training_set import TrainingSet
from ct_platform.settings import Spec
from ct_platform.training.fit import fit_pipeline


def test_fits_the_spec_pipeline_on_spec_columns(bank_model: Pipeline, bank_spec: Spec) -> None:
    assert list(bank_model.feature_names_in_) == bank_spec.dataset.feature_columns
    assert list(bank_model.classes_) == [0, 1]
    assert type(bank_model.named_steps["estimator"]).__name__ == "HistGradientBoostingClassifier"


def test_extra_columns_are_ignored(bank_window: TrainingSet, bank_spec: Spec) -> None:
    train = bank_window.train.head(2000).assign(unrelated=1.0)
    model = fit_pipeline(train, bank_spec)
    assert "unrelated" not in model.feature_names_in_


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda f: f.drop(columns=["euribor3m", "job"]),
            "lacks feature columns ['job', 'euribor3m']",
        ),
        (lambda f: f.drop(columns=["y"]), "lacks the target column 'y'"),
        (lambda f: f.head(49), "49 training rows, fewer than dataset.min_rows (50)"),
        (lambda f: f[f["y"] == 0], "single class [0]"),
        (
            lambda f: f.assign(y=f["y"].astype("float64").where(f.index % 100 != 0)),
            "20 training rows have no 'y' label",
        ),
    ],
    ids=["missing-features", "missing-target", "too-few-rows", "single-class", "unlabelled"],
)
def test_refuses_an_unfittable_frame(
    bank_window: TrainingSet, bank_spec: Spec, damage, message: str
) -> None:
    frame: pd.DataFrame = damage(bank_window.train.head(2000))
    with pytest.raises(ValueError, match=re.escape(message)):
        fit_pipeline(frame, bank_spec)
