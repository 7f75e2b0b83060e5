"""Mergeable one-pass summaries of data columns: what the drift check needs, in bounded memory.

A data set is fed to a `DataSummary` in batches of any size (Parquet row groups, slices of a
frame, pages of the prediction log); memory depends on the sample size, never on the row
count. Per column:

- numeric (`NumericSummary`, values as float64 with NaN for missing): the row count, the
  count of finite non-sentinel values, their mean and standard deviation (shifted sums, so
  large offsets lose no precision), exact counts of the distinct values while there are at
  most `FEW_VALUES` of them, and `sample_rows` values drawn uniformly with replacement from
  the non-missing values. The sample is exact in distribution: while a column has at most
  `sample_rows` values all of them are kept; after that each batch of m values replaces
  every sample slot independently with probability m / (values so far), with a value drawn
  uniformly from the batch, so every slot stays an independent uniform draw from all values
  seen: the same estimator as drawing from the whole column. The replaced slots are found by
  geometric skips, so a column of N values costs about sample_rows * ln(N / sample_rows)
  draws in all.
  Given the sorted values of a small reference (`ks_grid`), it also counts the values at or
  below, and below, each grid point: the exact two-sample Kolmogorov-Smirnov statistic
  against that reference, however long the column.
- categorical (`CategorySummary`, values as str): the row count and exact value counts.

Contract violations are counted in the same pass (`violations()`, see
`results.ColumnViolations`): numbers outside the spec's `min`/`max`, infinities, values
of a numeric column that are not numbers or overflow float64 (reported by the reader, which
parses them: `add_unparseable`, `add_overflow`), and categories outside the spec's
`categories` (from the exact counts).
Numbers outside the contract do not move the drift figures (a few ages of 500 among 10,000
turned a Wasserstein score to drift): they are reported apart. Unknown categories do count
in a categorical column's drift as well: a category the reference never had is new mass of
the distribution, as Evidently counts it, beside its report as a violation.

Plain numpy: no pandas or pyarrow, so the `ct drift` process never imports them for this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ct_platform.monitoring.results import MAX_QUOTED, ColumnViolations

# Evidently's "few distinct values" cut-off (see `monitoring.drift`).
FEW_VALUES = 5
# Distinct values are looked for in this many values first: more than FEW_VALUES among them
# settles "many" without hashing the whole batch.
_PROBE = 1024

Value = float | str
# The values of given rows of a batch as sent (text read from a file), for quoting.
SentText = Callable[[np.ndarray], list[str]]
# Rows of the present values of a batch -> those values as sent.
_Quote = Callable[[np.ndarray], list[str]]


class NumericSummary:
    """One numeric column, fed with `add(values)` (float64, NaN = missing)."""

    kind = "numeric"

    def __init__(
        self,
        sample_rows: int,
        *,
        sentinels: Iterable[float] = (),
        ks_grid: np.ndarray | None = None,
        seed: int = 0,
        low: float | None = None,
        high: float | None = None,
        integer: bool = False,
    ) -> None:
        self.sample_rows = sample_rows
        self.sentinels = np.asarray(sorted(set(sentinels)), dtype="float64")
        self.rows = 0
        self.n = 0
        # The spec's range, and what broke it (or the number rule) so far.
        self.low, self.high = low, high
        self.out_of_range = 0
        self.seen_outside: tuple[float, float] | None = None
        # The lowest and highest of them as sent ("1e-400", not 0), as the server quotes them.
        self.seen_as_sent: tuple[str, str] | None = None
        self.unparseable = 0
        self.examples: list[str] = []
        self.overflows = 0
        self.overflow_examples: list[str] = []
        self.infinite = 0
        # An `int` column: a fraction (30.5) breaks it, as the model server refuses it.
        self.integer = integer
        self.fractional = 0
        self.fractional_examples: list[str] = []
        self._shift: float | None = None
        self._sum = 0.0
        self._sum_squares = 0.0
        # value -> count while at most FEW_VALUES distinct values; None once more.
        self.few_counts: dict[float, int] | None = {}
        self._kept: list[np.ndarray] = []  # every value, until there are more than sample_rows
        self._sample: np.ndarray | None = None
        self._rng = np.random.default_rng(seed)
        self.ks_grid = ks_grid
        if ks_grid is not None:
            self._at_or_below = np.zeros(len(ks_grid) + 1, dtype="int64")
            self._below = np.zeros(len(ks_grid) + 1, dtype="int64")

    def add(self, values: np.ndarray, sent: SentText | None = None) -> None:
        """Add a batch (float64, NaN = missing); `sent`: the batch's values as sent, by row,
        when they were text, so violations quote them as written."""
        self.rows += len(values)
        kept = self._present(values)
        values = values if kept is None else values[kept]
        values = self._in_contract(values, _quoting(values, kept, sent))
        if len(values) == 0:
            return
        self.n += len(values)
        self._add_moments(values)
        if self.few_counts is not None:
            self._add_few(values)
        self._add_sample(values)
        if self.ks_grid is not None:
            # searchsorted "left" = number of grid points < x: x <= grid[j] iff j >= that.
            self._at_or_below += np.bincount(
                np.searchsorted(self.ks_grid, values, "left"), minlength=len(self.ks_grid) + 1
            )
            self._below += np.bincount(
                np.searchsorted(self.ks_grid, values, "right"), minlength=len(self.ks_grid) + 1
            )

    @property
    def std(self) -> float:
        """Population standard deviation (numpy's `std`, ddof 0) of the values."""
        if self.n == 0:
            return float("nan")
        mean = self._sum / self.n
        return float(np.sqrt(max(self._sum_squares / self.n - mean * mean, 0.0)))

    @property
    def sample(self) -> np.ndarray:
        """All values while at most `sample_rows`, else `sample_rows` uniform draws."""
        if self._sample is not None:
            return self._sample
        return np.concatenate(self._kept) if self._kept else np.empty(0)

    @property
    def complete(self) -> bool:
        """True when `sample` is every value, not a sample."""
        return self._sample is None

    def ks_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per grid point g: (values <= g, values < g). Needs `ks_grid`."""
        return np.cumsum(self._at_or_below)[:-1], np.cumsum(self._below)[:-1]

    def add_unparseable(self, count: int, examples: Iterable[str]) -> None:
        """`count` values of the rows added (as missing) were sent but are not numbers."""
        self.unparseable += count
        _quote(self.examples, examples)

    def add_overflow(self, count: int, examples: Iterable[str]) -> None:
        """`count` values of the rows added (as missing) were numbers beyond float64."""
        self.overflows += count
        _quote(self.overflow_examples, examples)

    def violations(self) -> ColumnViolations | None:
        if (
            not (self.unparseable or self.out_of_range or self.overflows or self.infinite)
            and not self.fractional
        ):
            return None
        bounded = self.low is not None or self.high is not None
        return ColumnViolations(
            self.rows,
            unparseable=self.unparseable,
            examples=tuple(self.examples),
            out_of_range=self.out_of_range,
            rule=f"outside [{_bound(self.low)}, {_bound(self.high)}]" if bounded else "",
            seen=self.seen_outside,
            seen_as_sent=self.seen_as_sent,
            overflows=self.overflows,
            overflow_examples=tuple(self.overflow_examples),
            infinite=self.infinite,
            fractional=self.fractional,
            fractional_examples=tuple(self.fractional_examples),
        )

    def _present(self, values: np.ndarray) -> np.ndarray | None:
        """Which values are present (not missing, not a sentinel); None when all are."""
        keep = ~np.isnan(values)
        for sentinel in self.sentinels:
            keep &= values != sentinel
        return None if keep.all() else keep

    def _in_contract(self, values: np.ndarray, quote: _Quote) -> np.ndarray:
        """Counts the infinite values and the finite ones outside the range; returns the
        others. Violations are reported apart from drift, so they do not move the drift
        figures either (13 ages of 500 among 10,000 turned a Wasserstein verdict to drift)."""
        infinite = np.isinf(values)
        self.infinite += int(infinite.sum())
        outside = np.zeros(len(values), dtype=bool)
        if self.low is not None:
            outside |= values < self.low
        if self.high is not None:
            outside |= values > self.high
        outside &= ~infinite
        self._count_fractions(values, ~(outside | infinite), quote)
        if outside.any():
            self._count_outside(values, np.flatnonzero(outside), quote)
        invalid = outside | infinite
        if self.integer:
            invalid |= ~infinite & (values != np.floor(values))
        return values[~invalid] if invalid.any() else values

    def _count_outside(self, values: np.ndarray, rows: np.ndarray, quote: _Quote) -> None:
        """Count the values at `rows` (outside the range); keep the lowest and highest."""
        self.out_of_range += len(rows)
        bad = values[rows]
        lowest, highest = rows[np.argmin(bad)], rows[np.argmax(bad)]
        low, high = float(values[lowest]), float(values[highest])
        low_sent, high_sent = quote(np.array([lowest, highest]))
        if self.seen_outside is not None and self.seen_as_sent is not None:
            if self.seen_outside[0] <= low:
                low, low_sent = self.seen_outside[0], self.seen_as_sent[0]
            if self.seen_outside[1] >= high:
                high, high_sent = self.seen_outside[1], self.seen_as_sent[1]
        self.seen_outside = (low, high)
        self.seen_as_sent = (low_sent, high_sent)

    def _count_fractions(self, values: np.ndarray, judged: np.ndarray, quote: _Quote) -> None:
        """Count the `judged` values with a fraction (an `int` column), quoting some."""
        if not self.integer:
            return
        rows = np.flatnonzero(judged & (values != np.floor(values)))
        if len(rows):
            self.fractional += len(rows)
            # The first row of each distinct fraction, up to the examples still wanted.
            _, first = np.unique(values[rows], return_index=True)
            _quote(self.fractional_examples, quote(rows[np.sort(first)][:MAX_QUOTED]))

    def _add_moments(self, values: np.ndarray) -> None:
        if self._shift is None:
            self._shift = float(values[0])
        centred = values - self._shift
        self._sum += float(centred.sum())
        # Not np.dot: BLAS threads cost more than they give on a busy 2-core box.
        self._sum_squares += float(np.einsum("i,i->", centred, centred))

    def _add_few(self, values: np.ndarray) -> None:
        counts = self.few_counts
        rest = values
        while len(rest):
            new = np.unique(rest[:_PROBE])
            if len(counts.keys() | set(new.tolist())) > FEW_VALUES:
                self.few_counts = None
                return
            counts.update({float(v): counts.get(float(v), 0) for v in new})
            known = np.zeros(len(rest), dtype=bool)
            for value in counts:
                known |= rest == value
            rest = rest[~known]
        for value in counts:
            counts[value] += int(np.count_nonzero(values == value))

    def _add_sample(self, values: np.ndarray) -> None:
        size = self.sample_rows
        if self._sample is None:
            self._kept.append(values)
            if self.n <= size:
                return
            everything = np.concatenate(self._kept)
            self._kept = []
            self._sample = everything[self._rng.integers(0, len(everything), size)]
            return
        slots = self._replaced_slots(len(values) / self.n)
        self._sample[slots] = values[self._rng.integers(0, len(values), len(slots))]

    def _replaced_slots(self, probability: float) -> np.ndarray:
        """Each sample slot independently with `probability`: the gaps between chosen slots
        are geometric, so this costs O(slots chosen), not O(sample size)."""
        size = self.sample_rows
        expected = size * probability
        gaps = self._rng.geometric(probability, int(expected + 8 * np.sqrt(expected) + 64))
        slots = np.cumsum(gaps) - 1
        while slots[-1] < size:  # rarely: more slots than the generous draw covered
            more = self._rng.geometric(probability, len(gaps))
            slots = np.concatenate([slots, slots[-1] + np.cumsum(more)])
        return slots[slots < size]


class CategorySummary:
    """One categorical column, fed with value counts (`add_counts`)."""

    kind = "category"

    def __init__(self, categories: Iterable[str] | None = None) -> None:
        self.rows = 0
        self.counts: dict[Value, int] = {}
        # The spec's categories (None: any value is allowed).
        self.categories = None if categories is None else frozenset(categories)

    def add_counts(self, counts: Mapping[Value, int], rows: int) -> None:
        """Counts of the non-missing values among `rows` rows."""
        self.rows += rows
        for value, count in counts.items():
            self.counts[value] = self.counts.get(value, 0) + int(count)

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def violations(self) -> ColumnViolations | None:
        if self.categories is None:
            return None
        unknown = {v: c for v, c in self.counts.items() if v not in self.categories and c}
        if not unknown:
            return None
        frequent = sorted(unknown.items(), key=lambda item: (-item[1], str(item[0])))
        return ColumnViolations(
            self.rows,
            n_unknown=sum(unknown.values()),
            unknown={str(v): c for v, c in frequent[:MAX_QUOTED]},
            n_distinct_unknown=len(unknown),
        )


def _bound(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:g}"


ColumnSummary = NumericSummary | CategorySummary


@dataclass
class DataSummary:
    """Summaries of a data set's feature columns, plus its row count and other column names."""

    columns: dict[str, ColumnSummary]
    rows: int = 0
    # Columns of the data that are not features (listed by the drift check as not tested).
    other_columns: list[str] = field(default_factory=list)
    # Missing values per feature column as ingest counts them (its completeness rule).
    missing: dict[str, int] = field(default_factory=dict)


def _quoting(values: np.ndarray, kept: np.ndarray | None, sent: SentText | None) -> _Quote:
    """Rows of `values` (the present values of a batch, `kept` its mask or None) -> the
    values as sent: the text when the batch was text, else the number (`shown_number`)."""
    if sent is None:
        return lambda rows: [shown_number(float(value)) for value in values[rows]]
    batch_rows = None if kept is None else np.flatnonzero(kept)
    return lambda rows: sent(rows if batch_rows is None else batch_rows[rows])


def shown_number(value: float) -> str:
    """A number as JSON would write it, exactly (30, 30.5, 1e-300, -0), not rounded (`:g`)."""
    if value.is_integer() and abs(value) < 1e16:
        return "-0" if value == 0 and np.signbit(value) else str(int(value))
    return repr(value)


def _quote(kept: list[str], examples: Iterable[str]) -> None:
    """Keep up to MAX_QUOTED distinct examples, first seen first."""
    for example in examples:
        if len(kept) < MAX_QUOTED and example not in kept:
            kept.append(example)
