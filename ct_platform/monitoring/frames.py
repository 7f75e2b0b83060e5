"""Type feature columns the way a cleaned frame has them, for data that skips the contract.

Frames of data that is compared, not admitted (prediction-log windows for the performance
check and the HTML reports): a bad value must not reject the whole window. So this coerces
rather than checks: numeric columns become float64 with sentinels and unparseable values as
NaN, categorical columns Python `str` in object dtype (missing stays NaN) — the same shape
`data.contract` gives training data, so reference and current agree value for value. The
drift check itself does not go through here: `monitoring.sources` types the same way and
counts what breaks the contract (`results.ColumnViolations`), so nothing is missing silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ct_platform.serving.schema import describe_near_duplicates, near_duplicates, repeated_names
from ct_platform.settings import ColumnSpec, DatasetSpec

if TYPE_CHECKING:  # pandas is imported where used: `ct drift` on Parquet never needs it
    import pandas as pd

# Where a frame carries a model's outputs next to its features: the predicted label (or value,
# for regression) and the probability of the positive class (binary classification).
PREDICTION_COLUMN = "prediction"
PROBA_COLUMN = "prediction_proba"


class MissingColumnsError(ValueError):
    """The data lacks columns the spec declares as features."""

    def __init__(self, missing: list[str], where: str) -> None:
        super().__init__(f"{where}: missing column(s) {', '.join(missing)}")
        self.missing = missing


class RepeatedColumnsError(ValueError):
    """The data names a column more than once (pandas would read the second `age` as
    `age.1`): refused by name, as the model server refuses such a request."""


def require_unique_columns(names: Sequence[object], where: str) -> None:
    """Raise `RepeatedColumnsError` naming each column `names` holds more than once."""
    if len(set(names)) < len(names):
        raise RepeatedColumnsError(
            f"{where}: column(s) named more than once: {repeated_names(names)}; name each once"
        )


class NearDuplicateColumnsError(ValueError):
    """The data names a column like a spec column but for case or surrounding spaces ("Age"
    or "age " for "age"): refused with "did you mean", as the model server refuses it."""


def refuse_near_duplicates(names: Sequence[object], dataset: DatasetSpec, where: str) -> None:
    """Raise `NearDuplicateColumnsError` naming each of `names` that is a near-duplicate
    (`serving.schema.near_duplicates`) of a column the spec names."""
    close = near_duplicates(names, [*dataset.columns, dataset.target, *dataset.drop_columns])
    if close:
        raise NearDuplicateColumnsError(
            f"{where}: {describe_near_duplicates(close, owner='the spec')}"
        )


def require_features(frame: pd.DataFrame, dataset: DatasetSpec, *, where: str) -> None:
    require_unique_columns(list(frame.columns), where)
    missing = [name for name in dataset.feature_columns if name not in frame.columns]
    if missing:
        raise MissingColumnsError(missing, where)


def typed_features(frame: pd.DataFrame, dataset: DatasetSpec, *, where: str) -> pd.DataFrame:
    """The spec's feature columns, in spec order, typed like a cleaned frame."""
    import pandas as pd

    require_features(frame, dataset, where=where)
    return pd.DataFrame(
        {name: typed_column(frame[name], dataset.columns[name]) for name in dataset.feature_columns}
    )


def typed_column(values: pd.Series, column: ColumnSpec) -> pd.Series:
    import pandas as pd

    if not column.is_numeric:
        return values.map(str, na_action="ignore").astype(object)
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    sentinels = [float(s) for s in column.sentinels if not isinstance(s, str)]
    return numbers.mask(numbers.isin(sentinels)) if sentinels else numbers
