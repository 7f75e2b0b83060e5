"""Turning domain results into Dagster metadata: numbers stay numbers so the UI plots them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def report_links(
    reports: Mapping[str, Path], view_url: Callable[[Path], str] | None = None
) -> dict[str, dg.MetadataValue]:
    """Metadata for HTML reports, keyed by `reports`' names.

    With `view_url` (e.g. MLflow's artifact view of the run that holds the report), `<name>`
    is a link a browser opens over HTTP and `<name>_file` the local file as text. Without it
    (a report only on this machine) `<name>` is the local file as text: a browser will not
    open a `file://` link from a web page.
    """
    metadata: dict[str, dg.MetadataValue] = {}
    for name, path in reports.items():
        local = dg.MetadataValue.path(str(path.resolve()))
        if view_url is None:
            metadata[name] = local
        else:
            metadata[name] = dg.MetadataValue.url(view_url(path))
            metadata[f"{name}_file"] = local
    return metadata


def severity(blocking: bool) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
