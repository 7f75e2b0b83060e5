"""Fast data-drift check: Evidently's default per-column verdicts, on sketches and samples.

One code path serves the `production_drift` asset and `ct drift`.

Which method, which threshold (read from the installed Evidently 0.7,
`legacy/calculations/stattests/registry.py::_get_default_stattest` and the stattest modules):
missing and infinite values are dropped first, then, with `n_ref` the reference's remaining
rows and `n_values` the distinct values of reference and current together,

| reference size | numeric column                                   | categorical column    |
|----------------|--------------------------------------------------|-----------------------|
| n_ref <= 1000  | n_values <= 2: z-test; <= 5: chi-square; else KS | n_values <= 2: z;     |
|                |                                                  | else chi-square       |
| n_ref > 1000   | n_values <= 5: Jensen-Shannon; else Wasserstein  | Jensen-Shannon        |

The p-value tests (KS, chi-square, z) flag drift when p < 0.05 (KS: p <= 0.05). The distance
methods flag drift when the distance >= 0.1: Wasserstein distance divided by the reference's
standard deviation (floored at 0.001), and the Jensen-Shannon distance (natural log) between
the value frequencies. A dataset drifts when the share of drifted columns >= the spec's
`monitoring.drift_share_threshold`, as in Evidently's `DriftedColumnsCount`.

Why distances, and why a sample is enough: with a million rows every p-value test flags
drift for differences nobody cares about (the test's power grows with sqrt(n)), which is why
Evidently itself switches to effect sizes above 1,000 reference rows, and why this module never
uses a p-value on large data.

Bounded memory: both sides are read once, in batches, into per-column summaries
(`monitoring.summaries`, fed by `monitoring.sources` from Parquet, CSV or frames, and by
`monitoring.prediction_log.summarise_window` from the prediction log), so memory does not
grow with the row count. What is exact and what is estimated:

- Jensen-Shannon (categorical columns, numeric ones with at most 5 values), chi-square and
  z-test: exact, from value counts over every row.
- KS (small references): exact. The summary keeps every current value up to the sample
  size and calls `scipy.stats.ks_2samp`; beyond that it counts the current values at or
  below each reference value while streaming, which gives the exact statistic, and takes
  the p-value from scipy's `kstwo` as `ks_2samp` itself does for samples over 10,000.
- Normalised Wasserstein (numeric columns of large references): estimated. The reference
  is 2,000 equal-mass quantile atoms of a sample (Wasserstein against those atoms differs
  from the exact one by far less than the sampling error), the current side a uniform
  sample of 200,000 non-missing values drawn from the values rather than the rows, so a
  mostly-missing column (pdays) is estimated as precisely as a full one. The normaliser,
  the reference's standard deviation, is exact (streamed moments). Standard error of the
  score, in standard deviations: about 0.8/sqrt(n) between two samples of one distribution,
  at most about sqrt(2/n) under a location shift (the error of a difference of two means):
  0.002-0.003 at n = 200,000, thirty times smaller than the 0.1 threshold, so only columns
  whose full-data score lies within a few thousandths of 0.1 can get a different verdict
  from full-data Evidently (ct_platform_tests/monitoring/test_drift_streaming.py holds the
  streamed, sampled check to full Evidently on bank data with planted drift).

`ReferenceProfile` keeps, per column, the count of values and their standard deviation, the
2,000 quantile atoms, the value counts of categorical columns and of numeric columns with at
most 5 distinct values, and the raw values of small (<= 1000-value) references, which the
p-value tests need. It saves as JSON next to the model (about 30 KB per numeric column), so
the reference never needs reloading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ct_platform.monitoring.frames import MissingColumnsError
from ct_platform.monitoring.results import ColumnDrift, DriftResult, summarise
from ct_platform.monitoring.sources import summarise_frame
from ct_platform.monitoring.summaries import (
    FEW_VALUES,
    CategorySummary,
    ColumnSummary,
    DataSummary,
    NumericSummary,
    Value,
)
from ct_platform.settings import DatasetSpec, MonitoringSpec

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_ROWS = 200_000
QUANTILE_ATOMS = 2_000
# Evidently's switch from p-value tests to distances (its "few distinct values" cut-off,
# FEW_VALUES, lives with the summaries that count them).
SMALL_REFERENCE_ROWS = 1_000
P_VALUE_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
# Evidently floors the Wasserstein normaliser so a constant reference column cannot divide by 0.
MIN_NORM = 0.001
PROFILE_FORMAT = 1
# The spec's defaults for the sample-size minimums, for callers without a spec at hand.
_DEFAULTS = MonitoringSpec()

ColumnKind = Literal["numeric", "category"]


@dataclass(frozen=True)
class ColumnSketch:
    """What the drift check needs to know about one reference column (missing values dropped)."""

    kind: ColumnKind
    n: int
    # value -> count: categorical columns always; numeric ones with at most FEW_VALUES values.
    counts: dict[Value, int] | None = None
    std: float | None = None
    # Numeric, n > SMALL_REFERENCE_ROWS: the reference as QUANTILE_ATOMS equal-mass atoms.
    quantiles: np.ndarray | None = None
    # Numeric, n <= SMALL_REFERENCE_ROWS: the raw values, for the KS test.
    values: np.ndarray | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "n": self.n,
            "counts": None if self.counts is None else [[v, c] for v, c in self.counts.items()],
            "std": self.std,
            "quantiles": None if self.quantiles is None else self.quantiles.tolist(),
            "values": None if self.values is None else self.values.tolist(),
        }

    @classmethod
    def from_json(cls, raw: dict) -> ColumnSketch:
        def array(key: str) -> np.ndarray | None:
            return None if raw[key] is None else np.asarray(raw[key], dtype="float64")

        counts = None if raw["counts"] is None else {v: int(c) for v, c in raw["counts"]}
        return cls(
            kind=raw["kind"],
            n=int(raw["n"]),
            counts=counts,
            std=raw["std"],
            quantiles=array("quantiles"),
            values=array("values"),
        )

    @classmethod
    def from_summary(cls, column: ColumnSummary) -> ColumnSketch:
        if isinstance(column, CategorySummary):
            return cls("category", column.n, dict(column.counts))
        counts = column.few_counts
        if column.n <= SMALL_REFERENCE_ROWS:
            return cls("numeric", column.n, counts, values=np.sort(column.sample))
        sample = np.sort(column.sample)
        quantiles = sample[_atom_positions(len(sample))]
        return cls("numeric", column.n, counts, std=column.std, quantiles=quantiles)


@dataclass(frozen=True)
class ReferenceProfile:
    """Per-column sketches of the reference (training) data, saveable as JSON."""

    columns: dict[str, ColumnSketch]

    @classmethod
    def from_summary(cls, summary: DataSummary) -> ReferenceProfile:
        return cls({name: ColumnSketch.from_summary(c) for name, c in summary.columns.items()})

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, dataset: DatasetSpec, *, sample_rows: int = SAMPLE_ROWS
    ) -> ReferenceProfile:
        """Profile of a frame typed like a cleaned frame."""
        return cls.from_summary(summarise_frame(frame, dataset, _kept_rows(sample_rows)))

    @classmethod
    def from_file(
        cls, path: Path, dataset: DatasetSpec, *, sample_rows: int = SAMPLE_ROWS
    ) -> ReferenceProfile:
        """Profile of a Parquet (streamed, bounded memory) or CSV file, typed by the spec."""
        from ct_platform.monitoring.sources import summarise_file

        return cls.from_summary(summarise_file(path, dataset, _kept_rows(sample_rows)))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": PROFILE_FORMAT,
            "columns": {name: sketch.to_json() for name, sketch in self.columns.items()},
        }
        path.write_text(json.dumps(payload))

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        raw = json.loads(Path(path).read_text(encoding="utf-8-sig"))  # a BOM, if any, ignored
        if raw.get("format") != PROFILE_FORMAT:
            raise ValueError(f"{path}: unsupported reference profile format {raw.get('format')}")
        return cls({name: ColumnSketch.from_json(s) for name, s in raw["columns"].items()})


def detect_drift(
    reference: ReferenceProfile | pd.DataFrame,
    current: pd.DataFrame | DataSummary,
    dataset: DatasetSpec,
    *,
    drift_share_threshold: float,
    min_rows: int = _DEFAULTS.min_window_rows,
    min_column_values: int = _DEFAULTS.min_column_values,
    max_invalid_share: float = _DEFAULTS.max_invalid_share,
    other_columns: Iterable[str] = (),
    sample_rows: int = SAMPLE_ROWS,
) -> DriftResult:
    """Per-column and dataset drift verdicts of `current` against the reference.

    `current` is a frame typed like a cleaned frame (see `monitoring.frames.typed_features`)
    or its summary (`monitoring.sources`, built with this reference so a small reference's
    KS statistic is counted). Every feature column gets a status: a verdict, or why it was
    not tested (type mismatch with the profile, all missing, fewer than `min_column_values`
    non-missing values on either side). Fewer than `min_rows` current rows give no verdict at
    all (`DriftResult.insufficient` says so with the figures). `other_columns` (the data's
    non-feature columns; a summary's own `other_columns` count too) are listed as not tested,
    with why (dropped by the spec, the target, not in the spec).

    Contract violations in `current` (see `results.ColumnViolations`) are reported per column
    in `DriftResult.violations`, apart from the verdicts; a column with more than
    `max_invalid_share` of its rows invalid gets no verdict (`DriftResult.invalid`, saying
    what is wrong), and a column not tested for too few values says how many were invalid.
    Raises `MissingColumnsError` when a feature column is absent from either side.
    """
    if not isinstance(reference, ReferenceProfile):
        reference = ReferenceProfile.from_frame(reference, dataset, sample_rows=sample_rows)
    absent = [c for c in dataset.feature_columns if c not in reference.columns]
    if absent:
        raise MissingColumnsError(absent, "reference profile")
    if not isinstance(current, DataSummary):
        current = summarise_frame(current, dataset, sample_rows, reference)
    rows = current.rows
    insufficient = None
    if rows < min_rows:
        insufficient = f"insufficient data: {rows} rows < minimum {min_rows}"
    verdicts: dict[str, ColumnDrift] = {}
    not_tested: dict[str, str] = {}
    invalid: dict[str, str] = {}
    violations = {
        name: found
        for name, column in current.columns.items()
        if (found := column.violations()) is not None
    }
    for name in dataset.feature_columns:
        sketch, column, broken = (
            reference.columns[name],
            current.columns[name],
            violations.get(name),
        )
        if broken is not None and broken.share > max_invalid_share and sketch.kind == column.kind:
            invalid[name] = f"{broken.describe()}; no drift verdict"
            continue
        why = _why_untestable(sketch, column, min_column_values)
        if why is None and insufficient is not None:
            why = f"the current data has {rows} rows < minimum {min_rows}"
        if why is not None:
            not_tested[name] = why if broken is None else f"{why}; {broken.describe()}"
        elif isinstance(column, NumericSummary):
            verdicts[name] = _numeric_drift(sketch, column)
        else:
            verdicts[name] = _category_drift(sketch, column)
    for name in [*other_columns, *current.other_columns]:
        if name not in dataset.feature_columns:
            not_tested[name] = _why_not_a_feature(name, dataset)
    return summarise(
        verdicts,
        drift_share_threshold,
        not_tested,
        insufficient,
        invalid=invalid,
        violations=violations,
    )


def evidently_method(kind: ColumnKind, n_reference: int, n_values: int) -> str:
    """The method Evidently's `DataDriftPreset` picks by default (see the module docstring)."""
    if n_reference <= SMALL_REFERENCE_ROWS:
        if kind == "numeric" and n_values > FEW_VALUES:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if kind == "numeric" and n_values > FEW_VALUES:
        return "wasserstein"
    return "jensenshannon"


def _kept_rows(sample_rows: int) -> int:
    # A reference of up to SMALL_REFERENCE_ROWS values keeps them all: the p-value tests need them.
    return max(sample_rows, SMALL_REFERENCE_ROWS)


def _why_untestable(sketch: ColumnSketch, column: ColumnSummary, minimum: int) -> str | None:
    """Why a feature column cannot be tested, or None when it can. A column constant on both
    sides is tested (its distance is 0): a constant reference that changes is real drift."""
    if sketch.kind != column.kind:
        return (
            f"type mismatch: the reference profile has it as {sketch.kind}, the spec "
            f"declares {column.kind} (rebuild the profile)"
        )
    present = column.n
    if sketch.n == 0:
        return "all missing in the reference"
    if present == 0:
        return f"all missing in the current data ({column.rows} rows)"
    if sketch.n < minimum:
        return f"too few values in the reference: {sketch.n} non-missing < minimum {minimum}"
    if present < minimum:
        return f"too few values: {present} non-missing of {column.rows} rows < minimum {minimum}"
    return None


def _why_not_a_feature(name: str, dataset: DatasetSpec) -> str:
    if name in dataset.drop_columns:
        return "dropped by the spec (dataset.drop_columns)"
    if name == dataset.target:
        return "the target, not a model input"
    if name == dataset.time_column:
        return "the time column, not a model input"
    return "not in the spec"


def _atom_positions(n: int) -> np.ndarray:
    """Positions in n sorted values of the quantiles at probabilities (k + 0.5) / atoms,
    inverse-CDF style (the smallest value whose empirical CDF reaches the probability)."""
    probabilities = (np.arange(QUANTILE_ATOMS) + 0.5) / QUANTILE_ATOMS
    return np.clip(np.ceil(probabilities * n).astype(np.int64) - 1, 0, n - 1)


# --- per-column checks -------------------------------------------------------------------


def _numeric_drift(sketch: ColumnSketch, current: NumericSummary) -> ColumnDrift:
    method = evidently_method("numeric", sketch.n, _numeric_n_values(sketch, current))
    if method == "ks":
        p_value = _ks_p_value(sketch.values, current)
        return ColumnDrift(method, p_value, P_VALUE_THRESHOLD, p_value <= P_VALUE_THRESHOLD)
    if method in ("chisquare", "z"):
        counts = _value_counts(sketch.values)
        return _p_value_verdict(method, counts, current.few_counts)
    if method == "jensenshannon":
        return _distance_verdict(method, _js_distance(sketch.counts, current.few_counts))
    norm = max(sketch.std, MIN_NORM)
    distance = _wasserstein(sketch.quantiles, current.sample)
    verdict = _distance_verdict(method, distance / norm)
    if sketch.std >= MIN_NORM:
        return verdict
    return replace(verdict, note=_constant_reference_note(sketch, distance))


def _constant_reference_note(sketch: ColumnSketch, distance: float) -> str:
    """The score of a (near) constant reference is its Wasserstein distance divided by
    Evidently's floor MIN_NORM, a figure without meaning; the distance itself is the mean
    absolute difference of the current values from the reference's value, in the column's
    units."""
    value = float(np.median(sketch.quantiles))
    return (
        f"reference constant at {value:g} (std {sketch.std:.3g} < Evidently's floor "
        f"{MIN_NORM:g}, the score's divisor): current values lie {distance:.6g} from it on "
        "average (Wasserstein distance, in the column's units)"
    )


def _numeric_n_values(sketch: ColumnSketch, current: NumericSummary) -> int:
    """Distinct values of both sides together, exactly while at most FEW_VALUES (all the
    method choice needs), else FEW_VALUES + 1."""
    if current.few_counts is None or (sketch.counts is None and sketch.values is None):
        return FEW_VALUES + 1
    reference = sketch.values if sketch.values is not None else list(sketch.counts)
    return len({float(v) for v in reference} | current.few_counts.keys())


def _ks_p_value(reference: np.ndarray, current: NumericSummary) -> float:
    """Two-sample KS p-value as `scipy.stats.ks_2samp` gives it on the two whole columns:
    itself when the summary kept every current value; otherwise (more than the sample size,
    where ks_2samp is in its asymptotic mode anyway) its asymptotic formula on the exact
    statistic, counted against the reference's values while streaming."""
    from scipy import stats  # p-value tests only: scipy.stats takes seconds to import

    if current.complete:
        return float(stats.ks_2samp(reference, current.sample).pvalue)
    grid = current.ks_grid
    n1, n2 = len(reference), current.n
    reference_at_or_below = np.searchsorted(np.sort(reference), grid, "right") / n1
    reference_below = np.concatenate([[0.0], reference_at_or_below[:-1]])
    at_or_below, below = current.ks_counts()
    statistic = max(
        float(np.max(reference_at_or_below - at_or_below / n2)),
        float(np.max(below / n2 - reference_below)),
        0.0,
    )
    large, small = max(n1, n2), min(n1, n2)
    effective = round(large * small / (large + small))
    return float(np.clip(stats.kstwo.sf(statistic, effective), 0, 1))


def _category_drift(sketch: ColumnSketch, current: CategorySummary) -> ColumnDrift:
    n_values = len(sketch.counts.keys() | current.counts.keys())
    method = evidently_method("category", sketch.n, n_values)
    if method == "jensenshannon":
        return _distance_verdict(method, _js_distance(sketch.counts, current.counts))
    return _p_value_verdict(method, sketch.counts, current.counts)


def _distance_verdict(method: str, score: float) -> ColumnDrift:
    score = float(score)
    return ColumnDrift(method, score, DISTANCE_THRESHOLD, score >= DISTANCE_THRESHOLD)


def _p_value_verdict(
    method: str, reference: dict[Value, int], current: dict[Value, int]
) -> ColumnDrift:
    test = _chi_square_p_value if method == "chisquare" else _z_test_p_value
    p_value = test(reference, current)
    return ColumnDrift(method, p_value, P_VALUE_THRESHOLD, p_value < P_VALUE_THRESHOLD)


def _aligned(
    reference: dict[Value, int], current: dict[Value, int]
) -> tuple[np.ndarray, np.ndarray]:
    # Sorted: a set of str iterates in hash order, which changes from process to process,
    # and so did the last digit of a Jensen-Shannon score.
    keys = sorted(reference.keys() | current.keys(), key=str)
    return (
        np.array([reference.get(k, 0) for k in keys], dtype="float64"),
        np.array([current.get(k, 0) for k in keys], dtype="float64"),
    )


def _wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """First Wasserstein distance of two samples, exactly: the area between their quantile
    functions (equal to the area between their CDFs, which scipy.stats.wasserstein_distance
    computes). Both are step functions on the grids k/len, so the integral is a sum over
    the merged grid; no search of one sample in the other is needed."""
    reference, current = np.sort(reference), np.sort(current)
    grids = [np.linspace(0.0, 1.0, len(reference) + 1), np.linspace(0.0, 1.0, len(current) + 1)]
    cuts = np.sort(np.concatenate(grids), kind="stable")  # a merge of two sorted runs
    middles, widths = (cuts[:-1] + cuts[1:]) / 2, np.diff(cuts)
    gap = _step(reference, middles) - _step(current, middles)
    return float(np.sum(np.abs(gap) * widths))


def _step(sorted_values: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The empirical quantile function at probabilities strictly inside its steps."""
    n = len(sorted_values)
    return sorted_values[np.minimum((probabilities * n).astype(np.int64), n - 1)]


def _js_distance(reference: dict[Value, int], current: dict[Value, int]) -> float:
    """Jensen-Shannon distance, natural log: scipy.spatial.distance.jensenshannon, as
    Evidently calls it, on the two frequency vectors."""
    reference_counts, current_counts = _aligned(reference, current)
    p, q = reference_counts / reference_counts.sum(), current_counts / current_counts.sum()
    mixture = (p + q) / 2
    return float(np.sqrt((_relative_entropy(p, mixture) + _relative_entropy(q, mixture)) / 2))


def _relative_entropy(p: np.ndarray, q: np.ndarray) -> float:
    present = p > 0  # 0 * log(0) = 0; q > 0 wherever p > 0 since q is a mixture with p
    return float(np.sum(p[present] * np.log(p[present] / q[present])))


def _chi_square_p_value(reference: dict[Value, int], current: dict[Value, int]) -> float:
    from scipy import stats

    reference_counts, observed = _aligned(reference, current)
    expected = reference_counts * observed.sum() / reference_counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(stats.chisquare(observed, expected).pvalue)


def _z_test_p_value(reference: dict[Value, int], current: dict[Value, int]) -> float:
    """Two-proportion z-test on "not the first value" (values sorted), as Evidently does."""
    keys = sorted(reference.keys() | current.keys())
    if len(keys) == 1:
        return 1.0
    n1, n2 = sum(reference.values()), sum(current.values())
    p1 = 1 - reference.get(keys[0], 0) / n1
    p2 = 1 - current.get(keys[0], 0) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(math.erfc(abs(z) / math.sqrt(2)))  # two-sided normal p-value, 2 * (1 - Phi)


def _value_counts(values: np.ndarray) -> dict[Value, int]:
    distinct, counts = np.unique(values, return_counts=True)
    return {float(v): int(c) for v, c in zip(distinct, counts, strict=True)}
