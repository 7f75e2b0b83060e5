"""Turning domain results into Dagster metadata: numbers stay numbers so the UI plots them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg

Scalar = float | int | str | bool | None


def numbers(prefix: str, values: Mapping[str, Scalar]) -> dict[str, dg.MetadataValue]:
    """`{prefix/name: value}` with floats and ints as numeric metadata, the rest as text."""
    return {f"{prefix}/{name}" if prefix else name: _value(v) for name, v in values.items()}


def _value(value: Scalar) -> dg.MetadataValue:
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    return dg.MetadataValue.text("" if value is None else str(value))


def report_link(path: Path) -> dg.MetadataValue:
    """A clickable link to an HTML report on the machine that runs the platform."""
    return dg.MetadataValue.url(path.resolve().as_uri())


def severity(blocking: bool) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
