"""The scikit-learn Pipeline the spec describes: input preparation, columns, the estimator."""

from __future__ import annotations

import importlib

from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils import get_tags

from ct_platform.settings import Spec
from ct_platform.training.preparation import PREPARATION_STEP, SpecPreparation


def build_pipeline(spec: Spec) -> Pipeline:
    """Unfitted pipeline: the spec's input preparation, numeric columns, one-hot categoricals,
    then the spec's estimator.

    The preparation step (sentinels to missing, spec columns only, categories as text) makes
    the logged model score raw rows as the platform does; serving drops it
    (`preparation.without_preparation`) and prepares requests itself. Every later step has an
    skl2onnx converter, which is what lets serving run them as one ONNX graph. Sentinels
    (e.g. pdays=999) reach them as NaN. Estimators that handle NaN
    themselves (HistGradientBoosting) get the numbers untouched, so "never contacted" stays
    its own branch in the trees; any other estimator gets a median imputer first.
    """
    dataset = spec.dataset
    estimator = make_estimator(spec)
    # keep_empty_features: a column missing throughout one window (pdays in early 2008) must
    # still be a model input, or the fitted pipeline and its input schema disagree.
    imputer = SimpleImputer(keep_empty_features=True)
    numeric = "passthrough" if get_tags(estimator).input_tags.allow_nan else imputer
    preprocess = ColumnTransformer(
        [
            ("numeric", numeric, dataset.numeric_features),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                dataset.categorical_features,
            ),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline(
        [
            (PREPARATION_STEP, SpecPreparation.from_spec(dataset)),
            ("preprocess", preprocess),
            ("estimator", estimator),
        ]
    )


def make_estimator(spec: Spec) -> BaseEstimator:
    """Instantiate `model.estimator` with `model.params`, checking it fits the task."""
    module_name, _, class_name = spec.model.estimator.rpartition(".")
    try:
        estimator_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ValueError(f"model.estimator: cannot import '{spec.model.estimator}'") from None
    try:
        estimator = estimator_class(**spec.model.params)
    except TypeError as exc:
        raise ValueError(f"model.params: {exc}") from None
    expected = is_classifier if spec.dataset.task == "classification" else is_regressor
    if not expected(estimator):
        raise ValueError(
            f"model.estimator '{spec.model.estimator}' is not a {spec.dataset.task} estimator"
        )
    return estimator
