"""Fixtures shared by every test: an isolated CT_HOME and spec, and the demo data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ct_platform.settings import Spec, load_spec

REPO_ROOT = Path(__file__).resolve().parent.parent
BANK_CSV = REPO_ROOT / "data" / "bank_marketing.csv.gz"
BANK_SPEC = REPO_ROOT / "ct_platform.yaml"


@pytest.fixture(autouse=True)
def ct_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes under its own CT_HOME and never touches a user's MLflow server."""
    home = tmp_path / "ct_home"
    monkeypatch.setenv("CT_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture
def spec_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bank spec, copied to a temp folder with its own empty landing folder; CT_SPEC set."""
    raw = yaml.safe_load(BANK_SPEC.read_text())
    raw["dataset"]["landing_dir"] = "incoming"
    (tmp_path / "incoming").mkdir()
    path = tmp_path / "ct_platform.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("CT_SPEC", str(path))
    return path


@pytest.fixture
def spec(spec_file: Path) -> Spec:
    return load_spec(spec_file)


@pytest.fixture(scope="session")
def bank_frame() -> pd.DataFrame:
    """The whole raw demo dataset (41,188 rows, time-ordered), exactly as the file has it."""
    return pd.read_csv(BANK_CSV, sep=";")


@pytest.fixture
def write_batch(spec: Spec) -> Iterator:
    """Write a DataFrame as a CSV batch into the spec's landing folder; returns the path."""

    def write(frame: pd.DataFrame, name: str) -> Path:
        path = spec.landing_dir / name
        frame.to_csv(path, sep=spec.dataset.separator, index=False)
        return path

    yield write
