"""Fixtures for the Dagster layer: a real instance in a temp DAGSTER_HOME, specs, batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from ct_platform.definitions import build_definitions
from ct_platform.settings import Spec
from ct_platform_tests.conftest import Storage

BATCH_ROWS = 4000


@pytest.fixture
def instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: Storage
) -> Iterator[dg.DagsterInstance]:
    """A real instance in a temp DAGSTER_HOME: SQLite, or PostgreSQL (see `storage`)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    overrides = storage.dagster_overrides
    with dg.instance_for_test(temp_dir=str(home), overrides=overrides) as test_instance:
        yield test_instance


@pytest.fixture
def land_bank_batches(
    bank_frame: pd.DataFrame, write_batch: Callable[[pd.DataFrame, str], Path]
) -> Callable[..., list[Path]]:
    """Land consecutive time-ordered slices of the bank data as batch files."""

    def land(count: int, *, first: int = 0) -> list[Path]:
        return [
            write_batch(
                bank_frame.iloc[i * BATCH_ROWS : (i + 1) * BATCH_ROWS], f"batch-{i + 1:05d}.csv"
            )
            for i in range(first, first + count)
        ]

    return land


def spec_variant(spec_file: Path, name: str, changes: dict[str, dict]) -> Path:
    """Write the test spec with `changes` merged in (two levels deep) as `<name>.yaml`."""
    raw = yaml.safe_load(spec_file.read_text())
    for section, values in changes.items():
        for key, value in values.items():
            current = raw.setdefault(section, {}).get(key)
            raw[section][key] = {**current, **value} if isinstance(current, dict) else value
    path = spec_file.with_name(f"{name}.yaml")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# An absolute floor no model reaches: every candidate is rejected, whatever the champion scores.
STRICT_FLOOR = {"gates": {"metric_floor": {"threshold": 0.999, "symmetric": False}}}
# A floor every model meets: for tests about something else than the floor.
LENIENT_FLOOR = {"gates": {"metric_floor": {"threshold": 0.0, "symmetric": False}}}


def run_job(
    spec: Spec, instance: dg.DagsterInstance, job: str, **kwargs
) -> dg.ExecuteInProcessResult:
    defs = build_definitions(spec)
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, **kwargs
    )
