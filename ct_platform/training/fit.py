"""Fit the spec's pipeline on a cleaned training frame, checking the frame first.

The frame comes from the data contract, but this is the boundary where a wrong frame would
otherwise surface as an obscure scikit-learn error (or, worse, a model fitted on nothing):
say what is wrong in the spec's terms instead.
"""

from __future__ import annotations

import pandas as pd
from sklearn.pipeline import Pipeline

from ct_platform.settings import Spec
from ct_platform.training.pipeline import build_pipeline


def check_training_frame(train: pd.DataFrame, spec: Spec) -> None:
    """Raise ValueError unless `train` can be fitted: columns, target, rows, classes."""
    dataset = spec.dataset
    missing = [c for c in dataset.feature_columns if c not in train.columns]
    if missing:
        raise ValueError(f"training frame lacks feature columns {missing}")
    if dataset.target not in train.columns:
        raise ValueError(f"training frame lacks the target column '{dataset.target}'")
    n_unlabelled = int(train[dataset.target].isna().sum())
    if n_unlabelled:
        raise ValueError(f"{n_unlabelled} training rows have no '{dataset.target}' label")
    if len(train) < dataset.min_rows:
        raise ValueError(
            f"{len(train)} training rows, fewer than dataset.min_rows ({dataset.min_rows})"
        )
    if dataset.task == "classification":
        classes = sorted(train[dataset.target].unique().tolist())
        if len(classes) < 2:
            raise ValueError(
                f"target '{dataset.target}' has a single class {classes} in the training "
                "frame: a classifier needs at least two"
            )


def fit_pipeline(train: pd.DataFrame, spec: Spec) -> Pipeline:
    """The spec's pipeline fitted on the spec's feature columns of `train`."""
    check_training_frame(train, spec)
    pipeline = build_pipeline(spec)
    pipeline.fit(train[spec.dataset.feature_columns], train[spec.dataset.target])
    return pipeline
