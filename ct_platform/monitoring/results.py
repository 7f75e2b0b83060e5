"""Result types shared by the fast drift check and the full Evidently drift report.

Both produce the same shape, so the Dagster layer, the CLI and the governor treat a verdict the
same way whichever engine computed it.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    drift_share: float
    dataset_drift: bool

    @property
    def n_drifted(self) -> int:
        return sum(column.drift for column in self.columns.values())

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, column in self.columns.items() if column.drift]

    def to_dict(self) -> dict[str, object]:
        """The `ct drift --json` shape."""
        return {
            "columns": {
                name: {"method": c.method, "score": c.score, "drift": c.drift}
                for name, c in self.columns.items()
            },
            "drift_share": self.drift_share,
            "dataset_drift": self.dataset_drift,
        }


def summarise(columns: dict[str, ColumnDrift], drift_share_threshold: float) -> DriftResult:
    """Dataset verdict as Evidently states it: drifted share >= threshold."""
    share = sum(c.drift for c in columns.values()) / len(columns) if columns else 0.0
    return DriftResult(columns, share, bool(columns) and share >= drift_share_threshold)
