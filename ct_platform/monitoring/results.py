"""Result types shared by the fast drift check and the full Evidently drift report.

Both produce the same shape, so the Dagster layer, the CLI and the governor treat a verdict the
same way whichever engine computed it.

A result accounts for every column it was given: each is either tested (`columns`, with its
method, score and verdict) or not tested (`not_tested`, with why: all missing, too few values,
type mismatch, dropped by the spec...). A window too small to judge gives no dataset verdict at
all: `dataset_drift` is None and `insufficient` says why, with the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["drift", "no drift", "insufficient data"]


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict: the method used, its score and the threshold it was held to."""

    method: str
    score: float
    threshold: float
    drift: bool


@dataclass(frozen=True)
class DriftResult:
    columns: dict[str, ColumnDrift]
    drift_share: float | None
    dataset_drift: bool | None  # None: no verdict (see `insufficient`)
    # column -> why it has no verdict (e.g. "all missing in the current data")
    not_tested: dict[str, str] = field(default_factory=dict)
    # why there is no dataset verdict, e.g. "insufficient data: 3 rows < minimum 200"
    insufficient: str | None = None

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
        """Every column: "drift", "no drift" or "not tested: <why>"."""
        tested = {name: "drift" if c.drift else "no drift" for name, c in self.columns.items()}
        return {**tested, **{name: f"not tested: {why}" for name, why in self.not_tested.items()}}

    def to_dict(self) -> dict[str, object]:
        """The `ct drift --json` shape: every column with its status."""
        tested = {
            name: {
                "status": "drift" if c.drift else "no drift",
                "method": c.method,
                "score": c.score,
                "threshold": c.threshold,
                "drift": c.drift,
            }
            for name, c in self.columns.items()
        }
        untested = {
            name: {"status": "not tested", "reason": why, "drift": None}
            for name, why in self.not_tested.items()
        }
        return {
            "verdict": self.verdict,
            "reason": self.insufficient,
            "columns": {**tested, **untested},
            "drift_share": self.drift_share,
            "dataset_drift": self.dataset_drift,
        }


def summarise(
    columns: dict[str, ColumnDrift],
    drift_share_threshold: float,
    not_tested: dict[str, str] | None = None,
    insufficient: str | None = None,
) -> DriftResult:
    """Dataset verdict as Evidently states it: drifted share >= threshold. No verdict when
    `insufficient` says the data is too small, or when no column could be tested."""
    not_tested = not_tested or {}
    if insufficient is None and not columns:
        insufficient = "insufficient data: no column has enough values to test"
    if insufficient is not None:
        return DriftResult(columns, None, None, not_tested, insufficient)
    share = sum(c.drift for c in columns.values()) / len(columns)
    return DriftResult(columns, share, share >= drift_share_threshold, not_tested)
