"""Result types shared by the fast drift check and the full Evidently drift report.

Both produce the same shape, so the Dagster layer, the CLI and the governor treat a verdict the
same way whichever engine computed it.

A result accounts for every column it was given: each is either tested (`columns`, with its
method, score and verdict) or not tested (`not_tested`, with why: all missing, too few values,
type mismatch, dropped by the spec...) or invalid (`invalid`: mostly values that break the
spec's contract). A window too small to judge gives no dataset verdict at all: `dataset_drift`
is None and `insufficient` says why, with the figures.

Contract violations (`violations`, per column: values that are not numbers, numbers outside
the spec's `min`/`max`, infinite or beyond float64, categories not in the spec's
`categories`) are counted while the data is read and reported apart from drift, whatever
the verdict: a value that breaks the contract is never silently counted as missing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["drift", "no drift", "insufficient data"]
# How many values a violation quotes: unparseable examples, unknown categories by count.
MAX_QUOTED = 5
# The model server's words for a number too large for float64 (`serving.schema`).
OVERFLOW = f"overflow to infinity: beyond float64 (±{sys.float_info.max:.4g})"


@dataclass(frozen=True)
class ColumnViolations:
    """One column's values that break the spec's contract, out of `rows` values (rows).

    `unparseable`: values sent for a numeric column that are not numbers (`examples`: up to
    MAX_QUOTED distinct ones, as sent). `overflows`: numbers too large for float64
    (`overflow_examples`, as sent), `infinite`: infinite values; both worded as the model
    server words them ("overflows to infinity: beyond float64 (±1.798e+308)", "infinite
    value ... is not allowed"). `out_of_range`: finite numbers breaking `rule` ("outside
    [17, 100]", the spec's `min`/`max`), the lowest and highest of them in `seen`.
    `fractional`: numbers with a fraction in an `int` column (`fractional_examples`), which
    the model server refuses ("expected an integer").
    `unknown`: values of a categorical column outside the spec's `categories`, the
    MAX_QUOTED most frequent with their counts; `n_unknown` counts them all.
    """

    rows: int
    unparseable: int = 0
    examples: tuple[str, ...] = ()
    out_of_range: int = 0
    rule: str = ""
    seen: tuple[float, float] | None = None
    seen_as_sent: tuple[str, str] | None = None
    n_unknown: int = 0
    unknown: dict[str, int] = field(default_factory=dict)
    n_distinct_unknown: int = 0
    overflows: int = 0
    overflow_examples: tuple[str, ...] = ()
    infinite: int = 0
    fractional: int = 0
    fractional_examples: tuple[str, ...] = ()

    @property
    def invalid(self) -> int:
        return (
            self.unparseable
            + self.overflows
            + self.infinite
            + self.out_of_range
            + self.n_unknown
            + self.fractional
        )

    @property
    def share(self) -> float:
        """Invalid values per row, 0..1."""
        return self.invalid / self.rows if self.rows else 0.0

    def describe(self) -> str:
        """E.g. "71 % of 10,000 values unparseable, e.g. 'abc'"; several kinds are listed
        with their counts after "N % of M values invalid: "."""
        kinds = [(count, phrase) for count, phrase in self._kinds() if count]
        head = f"{_percent(self.share)} of {self.rows:,} values"
        if len(kinds) == 1:
            return f"{head} {kinds[0][1]}"
        return f"{head} invalid: " + "; ".join(f"{count:,} {phrase}" for count, phrase in kinds)

    def to_dict(self) -> dict[str, object]:
        """The `ct drift --json` shape (`violations.<column>`)."""
        return {
            "rows": self.rows,
            "invalid": self.invalid,
            "share": self.share,
            "unparseable": self.unparseable,
            "examples": list(self.examples),
            "overflows": self.overflows,
            "overflow_examples": list(self.overflow_examples),
            "infinite": self.infinite,
            "fractional": self.fractional,
            "fractional_examples": list(self.fractional_examples),
            "out_of_range": self.out_of_range,
            "rule": self.rule or None,
            "seen_min": None if self.seen is None else _json_number(self.seen[0]),
            "seen_max": None if self.seen is None else _json_number(self.seen[1]),
            "seen_as_sent": None if self.seen_as_sent is None else list(self.seen_as_sent),
            "unknown_categories": self.n_unknown,
            "distinct_unknown_categories": self.n_distinct_unknown,
            "most_frequent_unknown": dict(self.unknown),
            "message": self.describe(),
        }

    def _kinds(self) -> list[tuple[int, str]]:
        quoted = ", ".join(repr(example) for example in self.examples)
        overflowed = ", ".join(repr(example) for example in self.overflow_examples)
        fractions = ", ".join(repr(example) for example in self.fractional_examples)
        seen = "" if self.seen is None else " (seen {} to {})".format(*self._seen_shown())
        named = ", ".join(f"{value!r} ({count:,})" for value, count in self.unknown.items())
        more = self.n_distinct_unknown - len(self.unknown)
        named += f" and {more:,} more" if more > 0 else ""
        return [
            (self.unparseable, f"unparseable, e.g. {quoted}"),
            (self.overflows, f"{OVERFLOW}, e.g. {overflowed}"),
            (self.infinite, "infinite (not allowed)"),
            (self.fractional, f"not integers (an int column), e.g. {fractions}"),
            (self.out_of_range, f"{self.rule}{seen}"),
            (self.n_unknown, f"in unknown categories: {named}"),
        ]

    def _seen_shown(self) -> tuple[str, str]:
        """The lowest and highest values outside the range, as sent when known."""
        if self.seen_as_sent is not None:
            return self.seen_as_sent
        return (f"{self.seen[0]:g}", f"{self.seen[1]:g}") if self.seen else ("", "")


def _percent(share: float) -> str:
    """71 %, 4.2 %, 0.03 %: two significant figures below 10 %, never rounded to 0."""
    percent = share * 100
    return f"{percent:.0f} %" if percent >= 10 else f"{percent:.2g} %"


def _json_number(value: float) -> float | str:
    # Infinities are not JSON: written as text.
    return value if abs(value) != float("inf") else str(value)


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict: the method used, its score and the threshold it was held to."""

    method: str
    score: float
    threshold: float
    drift: bool
    # What the score means when it alone misleads (a constant reference: Evidently's floored
    # normaliser makes any change a huge score). Not part of the verdict, so not compared.
    note: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DriftResult:
    columns: dict[str, ColumnDrift]
    drift_share: float | None
    dataset_drift: bool | None  # None: no verdict (see `insufficient`)
    # column -> why it has no verdict (e.g. "all missing in the current data")
    not_tested: dict[str, str] = field(default_factory=dict)
    # why there is no dataset verdict, e.g. "insufficient data: 3 rows < minimum 200"
    insufficient: str | None = None
    # column -> why its values are too invalid for a verdict ("71 % of 10,000 values
    # unparseable, e.g. 'abc'; no drift verdict")
    invalid: dict[str, str] = field(default_factory=dict)
    # column -> its contract violations in the current data (columns without any: absent)
    violations: dict[str, ColumnViolations] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        if self.dataset_drift is None:
            return "insufficient data"
        return "drift" if self.dataset_drift else "no drift"

    @property
    def n_drifted(self) -> int:
        return sum(column.drift for column in self.columns.values())

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, column in self.columns.items() if column.drift]

    def column_statuses(self) -> dict[str, str]:
        """Every column: "drift", "no drift", "invalid: <why>" or "not tested: <why>"."""
        tested = {name: "drift" if c.drift else "no drift" for name, c in self.columns.items()}
        invalid = {name: f"invalid: {why}" for name, why in self.invalid.items()}
        untested = {name: f"not tested: {why}" for name, why in self.not_tested.items()}
        return {**tested, **invalid, **untested}

    def describe_violations(self) -> list[str]:
        """One line per column with contract violations: "age: 71 % of 10,000 values ..."."""
        return [f"{name}: {v.describe()}" for name, v in self.violations.items()]

    def to_dict(self) -> dict[str, object]:
        """The `ct drift --json` shape: every column with its status."""
        tested = {
            name: {
                "status": "drift" if c.drift else "no drift",
                "method": c.method,
                "score": c.score,
                "threshold": c.threshold,
                "drift": c.drift,
                **({"note": c.note} if c.note else {}),
            }
            for name, c in self.columns.items()
        }
        untested = {
            name: {"status": status, "reason": why, "drift": None}
            for status, reasons in (("invalid", self.invalid), ("not tested", self.not_tested))
            for name, why in reasons.items()
        }
        return {
            "verdict": self.verdict,
            "reason": self.insufficient,
            "columns": {**tested, **untested},
            "drift_share": self.drift_share,
            "dataset_drift": self.dataset_drift,
            "violations": {name: v.to_dict() for name, v in self.violations.items()},
        }


def summarise(
    columns: dict[str, ColumnDrift],
    drift_share_threshold: float,
    not_tested: dict[str, str] | None = None,
    insufficient: str | None = None,
    *,
    invalid: dict[str, str] | None = None,
    violations: dict[str, ColumnViolations] | None = None,
) -> DriftResult:
    """Dataset verdict as Evidently states it: drifted share >= threshold. No verdict when
    `insufficient` says the data is too small, or when no column could be tested."""
    not_tested, invalid, violations = not_tested or {}, invalid or {}, violations or {}
    if insufficient is None and not columns:
        insufficient = "insufficient data: no column has enough values to test"
        if invalid:
            insufficient += f" (mostly invalid: {', '.join(invalid)})"
    if insufficient is not None:
        return DriftResult(columns, None, None, not_tested, insufficient, invalid, violations)
    share = sum(c.drift for c in columns.values()) / len(columns)
    drift = share >= drift_share_threshold
    return DriftResult(columns, share, drift, not_tested, None, invalid, violations)
