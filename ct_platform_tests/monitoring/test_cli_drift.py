"""`ct drift` on real files: verdicts on planted drift, JSON shape, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ct_platform.cli import main
from ct_platform.monitoring.drift import ReferenceProfile
from ct_platform.settings import Spec
from ct_platform_tests.monitoring.conftest import PLANTED


@pytest.fixture
def files(spec: Spec, same_distribution, planted: pd.DataFrame, tmp_path: Path) -> dict:
    """Reference as CSV (spec separator), current with and without drift as .csv.gz/Parquet."""
    reference, current = same_distribution
    separator = spec.dataset.separator
    paths = {
        "reference": tmp_path / "reference.csv",
        "same": tmp_path / "same.csv.gz",
        "planted": tmp_path / "planted.parquet",
    }
    reference.to_csv(paths["reference"], sep=separator, index=False)
    current.to_csv(paths["same"], sep=separator, index=False)
    planted.to_parquet(paths["planted"])
    return paths


def test_json_verdicts_on_planted_drift(files: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["drift", str(files["reference"]), str(files["planted"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert set(report) == {"columns", "drift_share", "dataset_drift"}
    drifted = sorted(name for name, c in report["columns"].items() if c["drift"])
    assert drifted == sorted(PLANTED)
    assert report["columns"]["age"]["method"] == "wasserstein"
    assert report["columns"]["job"]["method"] == "jensenshannon"
    assert all(set(c) == {"method", "score", "drift"} for c in report["columns"].values())
    assert report["drift_share"] == pytest.approx(3 / 15)
    assert report["dataset_drift"] is False  # 3 of 15 columns < the spec's 0.5


def test_saved_reference_profile_as_reference(
    spec: Spec, same_distribution, files: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    reference, _ = same_distribution
    profile = tmp_path / "model" / "reference_profile.json"
    ReferenceProfile.from_frame(reference, spec.dataset).save(profile)
    assert main(["drift", str(profile), str(files["planted"]), "--json"]) == 0
    from_profile = json.loads(capsys.readouterr().out)
    assert main(["drift", str(files["reference"]), str(files["planted"]), "--json"]) == 0
    assert from_profile == json.loads(capsys.readouterr().out)

    profile.write_text("{not json")
    assert main(["drift", str(profile), str(files["planted"])]) == 2
    assert "ct drift:" in capsys.readouterr().err


def test_no_drift_between_samples_of_one_distribution(
    files: dict, capsys: pytest.CaptureFixture
) -> None:
    assert main(["drift", str(files["reference"]), str(files["same"])]) == 0
    out = capsys.readouterr().out
    assert "DRIFT" not in out
    assert "dataset: no drift (0 of 15 columns drifted" in out
    assert "wasserstein" in out and "jensenshannon" in out


def test_missing_column_is_named_with_exit_2(
    files: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = tmp_path / "no_age.csv"
    pd.read_csv(files["reference"], sep=";").drop(columns="age").to_csv(broken, sep=";")
    assert main(["drift", str(files["reference"]), str(broken)]) == 2
    assert "missing column(s) age" in capsys.readouterr().err


def test_unreadable_file_exit_2(files: dict, tmp_path: Path, capsys: pytest.CaptureFixture):
    garbage = tmp_path / "current.parquet"
    garbage.write_bytes(b"definitely not parquet")
    assert main(["drift", str(files["reference"]), str(garbage)]) == 2
    assert "current.parquet" in capsys.readouterr().err
    assert main(["drift", str(files["reference"]), str(tmp_path / "absent.csv")]) == 2
    assert "absent.csv: cannot open file" in capsys.readouterr().err


def test_subprocess_json(files: dict, spec_file: Path) -> None:
    ct = Path(sys.executable).parent / "ct"  # the installed console script
    completed = subprocess.run(
        [str(ct), "drift", "--json", str(files["reference"]), str(files["planted"])],
        capture_output=True,
        text=True,
        env={**os.environ, "CT_SPEC": str(spec_file)},
        check=True,
        timeout=120,
    )
    report = json.loads(completed.stdout)
    assert sorted(n for n, c in report["columns"].items() if c["drift"]) == sorted(PLANTED)
