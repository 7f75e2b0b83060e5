"""The spec's input preparation as the first step of the logged model.

The data contract cleans training data (sentinels such as pdays=999 become missing, dropped
columns go, categories become text) and the platform's server does the same to each request
before scoring. A model in the registry must do it too, or everyone who scores the champion
the MLflow way (`mlflow models serve`, `pyfunc.load_model`, batch scoring) on raw rows gets
other answers than the platform. `SpecPreparation` is that cleaning as a scikit-learn
transformer whose parameters are plain lists and dicts from the spec, so skops stores it as
data. It is idempotent: a frame the contract already cleaned comes out unchanged.

Serving bundles and ONNX graphs hold the pipeline without it (`without_preparation`): the
platform's server prepares requests itself, without pandas.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from ct_platform.settings import DatasetSpec

PREPARATION_STEP = "prepare"


class SpecPreparation(TransformerMixin, BaseEstimator):
    """Raw rows -> the feature frame the contract would have produced.

    Parameters (all plain data, taken from the spec by `from_spec`):
        features: the model's input columns, in spec order; any other column (dropped
            columns such as a leak, the target, extras) is left out of the output.
        numeric: the numeric features; their values become float64.
        integer: the numeric features the spec types `int` (what the signature calls long).
        sentinels: per column, the values that mean "unknown" (e.g. `{"pdays": [999]}`);
            they become missing (NaN).

    Input: a DataFrame holding at least `features` (numbers may arrive as int or float,
    categories as text or as integers, e.g. a season coded 1-4). Output: a DataFrame with
    exactly `features`, numeric columns float64, categories Python `str` in object dtype
    (missing stays NaN; an integral number 3 or 3.0 becomes "3"). Raises ValueError naming
    the column when a feature is missing or a numeric value is not a number.
    """

    def __init__(
        self,
        features: list[str] | None = None,
        numeric: list[str] | None = None,
        integer: list[str] | None = None,
        sentinels: dict[str, list[float | str]] | None = None,
    ) -> None:
        self.features = features
        self.numeric = numeric
        self.integer = integer
        self.sentinels = sentinels

    @classmethod
    def from_spec(cls, dataset: DatasetSpec) -> SpecPreparation:
        return cls(
            features=list(dataset.feature_columns),
            numeric=list(dataset.numeric_features),
            integer=[c for c in dataset.numeric_features if dataset.columns[c].type == "int"],
            sentinels={
                name: list(column.sentinels)
                for name, column in dataset.columns.items()
                if column.sentinels and name in dataset.feature_columns
            },
        )

    def fit(self, X: pd.DataFrame, y: object = None) -> SpecPreparation:
        self._check_columns(X)
        self.feature_names_in_ = np.asarray(self.features, dtype=object)
        self.n_features_in_ = len(self.features)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        self._check_columns(X)
        numeric = set(self.numeric or [])
        sentinels = self.sentinels or {}
        return pd.DataFrame(
            {
                name: _numeric(X[name], name, sentinels.get(name, []))
                if name in numeric
                else _category(X[name], sentinels.get(name, []))
                for name in self.features
            },
            index=X.index,
        )

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray(self.features, dtype=object)

    def _check_columns(self, X: object) -> None:
        if not isinstance(X, pd.DataFrame):
            raise ValueError(
                f"input must be a DataFrame with columns {self.features}, got {type(X).__name__}"
            )
        missing = [name for name in self.features or [] if name not in X.columns]
        if missing:
            raise ValueError(f"input lacks feature column(s) {missing}")


def _numeric(values: pd.Series, name: str, sentinels: list[float | str]) -> pd.Series:
    text_sentinels = [s for s in sentinels if isinstance(s, str)]
    if text_sentinels:
        values = values.mask(values.astype(object).isin(text_sentinels))
    if pd.api.types.is_bool_dtype(values):
        raise ValueError(f"column '{name}': expected numbers, got booleans")
    try:
        numbers = pd.to_numeric(values, errors="raise").astype("float64")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"column '{name}': expected numbers: {exc}") from None
    number_sentinels = [float(s) for s in sentinels if not isinstance(s, str)]
    return numbers.mask(numbers.isin(number_sentinels)) if number_sentinels else numbers


def _category(values: pd.Series, sentinels: list[float | str]) -> pd.Series:
    text = values.map(_category_text, na_action="ignore").astype(object)
    listed = {str(s) for s in sentinels}
    return text.mask(text.isin(listed)) if listed else text


def _category_text(value: Any) -> Any:
    """A category as the contract writes it: text; an integral number without its ".0"."""
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return value
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def without_preparation(model: Pipeline) -> Pipeline:
    """The pipeline the platform's server runs: `model` without its preparation step.

    A view sharing the fitted steps (no copy). Models logged before the step existed come
    back as they are.
    """
    if model.steps and model.steps[0][0] == PREPARATION_STEP:
        return model[1:]
    return model


def raw_like(frame: pd.DataFrame, model: Pipeline, head: int | None = None) -> pd.DataFrame:
    """Cleaned features typed as raw data looks: what the logged model's signature describes.

    Integer columns become int64 (a missing value that a sentinel stands for is written as
    that sentinel, e.g. pdays 999); a column that still holds missing values stays float64.
    A category whose values are all integers written plainly ("1".."4") becomes int64.
    With `head`, only the first `head` rows are returned, typed as the whole frame types
    them (each column judged over every row), without copying the rest of the frame.
    """
    preparation = model.steps[0][1] if model.steps[0][0] == PREPARATION_STEP else None
    rows = frame if head is None else frame.head(head)
    if preparation is None:
        return rows
    sentinels = preparation.sentinels or {}
    raw = rows[list(preparation.features)].copy()
    numeric = set(preparation.numeric or [])
    for name in preparation.integer or []:
        numbers = [s for s in sentinels.get(name, []) if not isinstance(s, str)]
        # A numeric sentinel fills every missing value; without one a missing value keeps
        # the whole column float.
        if numbers or not frame[name].isna().any():
            raw[name] = (raw[name].fillna(numbers[0]) if numbers else raw[name]).astype("int64")
    for name in preparation.features:
        if name not in numeric and _integer_coded(raw[name] if head is None else frame[name]):
            raw[name] = raw[name].astype("int64")
    return raw


def _integer_coded(column: pd.Series) -> bool:
    """Every value of a category is an integer written plainly ("3", not "03" or "3.0")."""
    if column.empty or column.isna().any():
        return False
    # Judged on the distinct values: the same answer as every row's, at a category's cost.
    distinct = pd.Series(column.unique()).astype(str)
    return bool(distinct.str.fullmatch(r"-?(0|[1-9][0-9]*)").all())
