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
from ct_platform.cli.drift import (
    EXIT_CONTRACT_VIOLATIONS,
    EXIT_INSUFFICIENT_DATA,
    INGEST_RULES_HEADING,
)
from ct_platform.monitoring.drift import ReferenceProfile
from ct_platform.settings import Spec
from ct_platform_tests.monitoring.conftest import PLANTED, as_landed


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
    as_landed(current).to_csv(paths["same"], sep=separator, index=False)
    as_landed(planted).to_parquet(paths["planted"])
    return paths


def test_json_verdicts_on_planted_drift(
    files: dict, planted: pd.DataFrame, capsys: pytest.CaptureFixture
) -> None:
    """The planted new job is outside the spec's categories, and 8 years more takes some ages
    past the spec's 100: drift, and named as contract violations (exit 4: a verdict, on data
    that breaks the contract)."""
    exit_code = main(["drift", str(files["reference"]), str(files["planted"]), "--json"])
    assert exit_code == EXIT_CONTRACT_VIOLATIONS == 4
    report = json.loads(capsys.readouterr().out)

    keys = {"verdict", "reason", "columns", "drift_share", "dataset_drift", "violations"}
    assert set(report) == {*keys, "ingest_rules"}
    # The file holds the features only: they keep ingest's completeness rule, and the
    # target's rules are named as not checked.
    checked = report["ingest_rules"]["checked"]
    assert {(rule["rule"], rule["column"], rule["passed"]) for rule in checked} == {
        ("completeness", name, True) for name in report["columns"]
    }
    assert report["ingest_rules"]["not_checked"][0] == (
        "column 'y', rules completeness, target: the column is not in CURRENT"
    )
    assert list(report["violations"]) == ["age", "job"]
    age, job = report["violations"]["age"], report["violations"]["job"]
    assert job["unknown_categories"] == (planted["job"] == "crypto-trader").sum()
    assert job["most_frequent_unknown"] == {"crypto-trader": job["unknown_categories"]}
    assert job["message"].endswith(f"in unknown categories: 'crypto-trader' ({job['invalid']:,})")
    old = planted["age"][planted["age"] > 100]
    assert (age["out_of_range"], age["seen_max"]) == (len(old), old.max())
    assert age["rule"] == "outside [17, 100]" and age["unparseable"] == 0
    assert (report["verdict"], report["reason"]) == ("no drift", None)
    drifted = sorted(name for name, c in report["columns"].items() if c["drift"])
    assert drifted == sorted(PLANTED)
    assert report["columns"]["age"]["method"] == "wasserstein"
    assert report["columns"]["job"]["method"] == "jensenshannon"
    fields = {"status", "method", "score", "threshold", "drift"}
    assert all(set(c) == fields for c in report["columns"].values())
    assert report["columns"]["age"]["status"] == "drift"
    assert report["drift_share"] == pytest.approx(3 / 15)
    assert report["dataset_drift"] is False  # 3 of 15 columns < the spec's 0.3


def test_saved_reference_profile_as_reference(
    spec: Spec, same_distribution, files: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    reference, _ = same_distribution
    profile = tmp_path / "model" / "reference_profile.json"
    ReferenceProfile.from_frame(reference, spec.dataset).save(profile)
    assert main(["drift", str(profile), str(files["planted"]), "--json"]) == 4
    from_profile = json.loads(capsys.readouterr().out)
    assert main(["drift", str(files["reference"]), str(files["planted"]), "--json"]) == 4
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


def test_wrong_separator_gets_ingests_hint(
    files: dict, spec: Spec, spec_file: Path, tmp_path: Path
) -> None:
    """The newcomer's case: a comma-separated CURRENT for a ';' spec was "missing column(s)
    ..." in ct drift, where ingest says what is wrong. The real `ct` script."""
    commas = tmp_path / "commas.csv"
    pd.read_csv(files["reference"], sep=spec.dataset.separator).to_csv(commas, index=False)
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "ct"), "drift", str(files["reference"]), str(commas)],
        capture_output=True,
        text=True,
        env={**os.environ, "CT_SPEC": str(spec_file)},
        check=False,
        timeout=600,
    )
    assert completed.returncode == 2, completed.stderr
    assert "names none of the spec's columns (is the separator ';'?)" in completed.stderr


def test_subprocess_json(files: dict, spec_file: Path) -> None:
    ct = Path(sys.executable).parent / "ct"  # the installed console script
    completed = subprocess.run(
        [str(ct), "drift", "--json", str(files["reference"]), str(files["planted"])],
        capture_output=True,
        text=True,
        env={**os.environ, "CT_SPEC": str(spec_file)},
        check=False,
        timeout=600,
    )
    assert completed.returncode == EXIT_CONTRACT_VIOLATIONS, completed.stderr  # crypto-trader
    report = json.loads(completed.stdout)
    assert sorted(n for n, c in report["columns"].items() if c["drift"]) == sorted(PLANTED)


CASES = Path(__file__).parent / "cases"
# Every column of the 3-row example file, with the status it must get. pdays holds only its
# sentinel (999 = never contacted) in the reference, so it is all missing there.
TOO_FEW = "not tested: too few values: 3 non-missing of 3 rows < minimum 100"
THREE_ROW_STATUSES = {
    "age": TOO_FEW,
    "job": TOO_FEW,
    "marital": TOO_FEW,
    "education": TOO_FEW,
    "default": TOO_FEW,
    "housing": TOO_FEW,
    "loan": TOO_FEW,
    "duration": "not tested: dropped by the spec (dataset.drop_columns)",
    "campaign": TOO_FEW,
    "pdays": "not tested: all missing in the reference",
    "previous": TOO_FEW,
    "emp.var.rate": TOO_FEW,
    "cons.price.idx": TOO_FEW,
    "cons.conf.idx": TOO_FEW,
    "euribor3m": TOO_FEW,
    "nr.employed": TOO_FEW,
    "y": "not tested: the target, not a model input",
}


def test_three_rows_give_no_verdict_and_list_every_column(
    spec: Spec, capsys: pytest.CaptureFixture
) -> None:
    """The issue's example: 3 current rows against 4,000 used to print DRIFT (8 of 14
    columns) and exit 0, with pdays missing from the table."""
    reference, current = CASES / "drift-reference-4000.csv", CASES / "drift-current-3-rows.csv"
    assert list(pd.read_csv(current, sep=";").columns) == list(THREE_ROW_STATUSES)

    assert main(["drift", str(reference), str(current)]) == EXIT_INSUFFICIENT_DATA == 3
    out, err = capsys.readouterr()
    assert "ct drift: insufficient data: 3 rows < minimum 200: no verdict" in err
    assert "DRIFT" not in out and "no drift" not in out
    assert "dataset: no verdict, insufficient data: 3 rows < minimum 200" in out
    lines = out.splitlines()
    rules = lines.index(INGEST_RULES_HEADING)
    table = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:rules]}
    assert table == THREE_ROW_STATUSES
    checked = [line for line in lines[rules + 1 :] if line.startswith("  ok: column 'y'")]
    assert checked == [
        "  ok: column 'y', rule completeness: 100.0% non-missing, 0 missing (minimum 95.0%)",
        "  ok: column 'y', rule target: 3 target values, all labels [0, 1]",
    ]
    assert lines[-1].startswith("dataset: no verdict")

    assert main(["drift", str(reference), str(current), "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "insufficient data"
    assert report["reason"] == "insufficient data: 3 rows < minimum 200"
    assert report["dataset_drift"] is None and report["drift_share"] is None
    statuses = {name: f"{c['status']}: {c['reason']}" for name, c in report["columns"].items()}
    assert statuses == THREE_ROW_STATUSES


def test_a_sparse_column_is_not_tested_and_says_why(
    spec: Spec, same_distribution, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Enough rows, but a column with 3 non-missing values of 5,000: that column gets no
    verdict (with its figures), the others do, and so does the dataset; the column breaks
    ingest's completeness rule, named with ingest's figures (exit 4)."""
    reference, current = same_distribution
    sparse = as_landed(current.iloc[:5000])
    sparse.loc[3:, "euribor3m"] = None
    paths = {"reference": tmp_path / "reference.parquet", "current": tmp_path / "sparse.parquet"}
    reference.to_parquet(paths["reference"])
    sparse.to_parquet(paths["current"])

    assert main(["drift", str(paths["reference"]), str(paths["current"]), "--json"]) == (
        EXIT_CONTRACT_VIOLATIONS
    )
    report = json.loads(capsys.readouterr().out)
    broken = [rule for rule in report["ingest_rules"]["checked"] if not rule["passed"]]
    assert [(rule["column"], rule["message"]) for rule in broken] == [
        ("euribor3m", "0.1% non-missing, 4997 missing (minimum 95.0%)")
    ]

    assert report["verdict"] == "no drift"
    assert report["columns"]["euribor3m"] == {
        "status": "not tested",
        "reason": "too few values: 3 non-missing of 5000 rows < minimum 100",
        "drift": None,
    }
    tested = [name for name, c in report["columns"].items() if c["status"] != "not tested"]
    assert sorted(tested) == sorted(set(spec.dataset.feature_columns) - {"euribor3m"})
    assert report["drift_share"] == 0.0


def test_outside_the_repository_the_spec_is_ct_spec_or_found_above(
    files: dict, spec_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`ct drift` (the installed script) run from folders outside the repository: CT_SPEC,
    else the nearest ct_platform.yaml above the working folder, else an error naming both."""
    ct = Path(sys.executable).parent / "ct"
    env = {key: value for key, value in os.environ.items() if key != "CT_SPEC"}

    def drift(cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        command = [str(ct), "drift", "--json", str(files["reference"]), str(files["planted"])]
        return subprocess.run(
            command,
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**env, **extra},
            check=False,
            timeout=600,
        )

    nowhere = tmp_path_factory.mktemp("nowhere")
    assert not any((folder / "ct_platform.yaml").exists() for folder in (nowhere, *nowhere.parents))
    missing = drift(nowhere)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == (
        f"ct drift: spec file not found: CT_SPEC is not set and there is no ct_platform.yaml "
        f"in {nowhere} or any folder above it (set CT_SPEC to the spec file, or run inside "
        "the project)\n"
    )

    named = drift(nowhere, CT_SPEC=str(spec_file))
    assert named.returncode == EXIT_CONTRACT_VIOLATIONS, named.stderr
    assert sorted(n for n, c in json.loads(named.stdout)["columns"].items() if c["drift"]) == (
        sorted(PLANTED)
    )

    below = spec_file.parent / "reports" / "june"  # the spec is two folders up
    below.mkdir(parents=True)
    found = drift(below)
    assert found.returncode == EXIT_CONTRACT_VIOLATIONS, found.stderr
    by_name, by_lookup = json.loads(named.stdout), json.loads(found.stdout)
    assert by_lookup["violations"] == by_name["violations"]
    assert {n: c["status"] for n, c in by_lookup["columns"].items()} == {
        n: c["status"] for n, c in by_name["columns"].items()
    }

    wrong = drift(below, CT_SPEC="nowhere.yaml")  # relative to the working folder
    assert wrong.returncode == 2
    assert wrong.stderr == (
        f"ct drift: spec file not found: CT_SPEC=nowhere.yaml names {below / 'nowhere.yaml'}, "
        "not a file\n"
    )
