"""`ct drift` applies ingest's rules beyond the features: the time column's format and the
target's rules, in ingest's words, with the contract exit code; what it could not check it
names. A regression project written as a newcomer would: renamed columns, `|` separator, a
`%d/%m/%Y` date column with a space in its name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ct_platform.cli.drift import EXIT_CONTRACT_VIOLATIONS
from ct_platform.data.contract import check_contract
from ct_platform.data.reader import read_batch
from ct_platform.settings import load_spec
from ct_platform_tests.conftest import BANK_CSV

RENAMED = {
    "age": "client age",
    "job": "occupation",
    "campaign": "contacts",
    "euribor3m": "euribor",
    "nr.employed": "employees",
    "duration": "call seconds",
}
SPEC = {
    "dataset": {
        "name": "call_length",
        "separator": "|",
        "target": "call seconds",
        "task": "regression",
        "target_rules": {"min": 0, "max": 6000},
        "time_column": "call date",
        "min_rows": 50,
        "columns": {
            "call date": {"type": "date", "format": "%d/%m/%Y"},
            "client age": {"type": "int", "min": 17, "max": 100},
            "occupation": {"type": "category"},
            "contacts": {"type": "int", "min": 1, "max": 100},
            "euribor": {"type": "float", "min": 0, "max": 10},
            "employees": {"type": "float", "min": 4000, "max": 6000},
        },
    },
    "model": {"name": "call_length", "estimator": "sklearn.linear_model.Ridge"},
    "evaluation": {"primary_metric": "rmse"},
    "gates": {"metric_floor": {"threshold": 0.5}},
}
ROWS = 2000


@pytest.fixture(scope="module")
def calls() -> pd.DataFrame:
    """4,000 bank calls as the newcomer's export: renamed, dated 40 calls a day."""
    frame = pd.read_csv(BANK_CSV, sep=";", nrows=2 * ROWS)[list(RENAMED)].rename(columns=RENAMED)
    days = pd.to_datetime("2008-05-05") + pd.to_timedelta(frame.index // 40, unit="D")
    frame.insert(0, "call date", days.strftime("%d/%m/%Y"))
    return frame


@pytest.fixture
def project(tmp_path: Path, calls: pd.DataFrame) -> dict[str, Path]:
    spec = tmp_path / "ct_platform.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    reference = tmp_path / "ref.csv"
    calls.iloc[:ROWS].to_csv(reference, sep="|", index=False)
    return {"spec": spec, "reference": reference, "folder": tmp_path}


def _current(project: dict[str, Path], frame: pd.DataFrame, name: str) -> Path:
    path = project["folder"] / name
    frame.to_csv(path, sep="|", index=False)
    return path


def _ct_drift(project: dict[str, Path], current: Path, *flags: str) -> subprocess.CompletedProcess:
    ct = Path(sys.executable).parent / "ct"  # the installed console script
    return subprocess.run(
        [str(ct), "drift", str(project["reference"]), str(current), *flags],
        capture_output=True,
        text=True,
        env={**os.environ, "CT_SPEC": str(project["spec"])},
        check=False,
        timeout=600,
    )


def _ingest_failures(project: dict[str, Path], path: Path) -> list[str]:
    dataset = load_spec(project["spec"]).dataset
    return [rule.describe() for rule in check_contract(read_batch(path, dataset), dataset).failed]


def test_iso_dates_break_the_time_columns_format_in_ingests_words(
    project: dict[str, Path], calls: pd.DataFrame
) -> None:
    current = calls.iloc[ROWS:].copy()
    dates = pd.to_datetime(current["call date"], format="%d/%m/%Y")
    current["call date"] = dates.dt.strftime("%Y-%m-%d")
    path = _current(project, current, "iso_dates.csv")

    completed = _ct_drift(project, path)

    assert completed.returncode == EXIT_CONTRACT_VIOLATIONS, completed.stderr
    ingest = _ingest_failures(project, path)
    assert ingest == [
        f"column 'call date', rule type: {ROWS} values (100.00%) are not a date in the format "
        f"'%d/%m/%Y': '{current['call date'].iloc[0]}', "
        + ", ".join(repr(day) for day in current["call date"].unique()[1:5])
    ]
    assert f"  BROKEN: {ingest[0]}\n" in completed.stdout
    assert f"ct drift: {path}: {ingest[0]}\n" in completed.stderr


def test_negative_target_breaks_target_rules_in_ingests_words(
    project: dict[str, Path], calls: pd.DataFrame
) -> None:
    current = calls.iloc[ROWS:].copy()
    current.loc[current.index[:10], "call seconds"] = -5
    path = _current(project, current, "negative.csv")

    completed = _ct_drift(project, path, "--json")

    assert completed.returncode == EXIT_CONTRACT_VIOLATIONS, completed.stderr
    ingest = _ingest_failures(project, path)
    assert len(ingest) == 1 and ingest[0].startswith(
        "column 'call seconds', rule target_range: 10 values outside [0, 6000] (e.g. -5); "
        "seen [-5, "
    )
    report = json.loads(completed.stdout)
    assert report["violations"] == {}  # the features keep the contract
    broken = [rule for rule in report["ingest_rules"]["checked"] if not rule["passed"]]
    assert [(rule["rule"], rule["column"]) for rule in broken] == [("target_range", "call seconds")]
    assert broken[0]["figures"]["n_out_of_range"] == 10
    assert f"ct drift: {path}: {ingest[0]}\n" in completed.stderr


def test_clean_file_exits_0_and_lists_the_rules_checked_and_not(
    project: dict[str, Path], calls: pd.DataFrame
) -> None:
    path = _current(project, calls.iloc[ROWS:], "clean.csv")
    assert _ingest_failures(project, path) == []

    completed = _ct_drift(project, path)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    checked = [
        line.removeprefix("  ok: ")
        for line in completed.stdout.splitlines()
        if line.startswith("  ok: ")
    ]
    features = load_spec(project["spec"]).dataset.feature_columns
    assert [line.split(":")[0] for line in checked] == [
        *(f"column '{name}', rule completeness" for name in features),
        "column 'call date', rule completeness",
        "column 'call date', rule type",
        "column 'call seconds', rule completeness",
        "column 'call seconds', rule target",
        "column 'call seconds', rule target_range",
    ]
    assert "  not checked: min_rows, columns, duplicates: " in completed.stdout


def test_without_the_target_its_rules_are_named_as_not_checked(
    project: dict[str, Path], calls: pd.DataFrame
) -> None:
    """A prediction log has no target: exit 0 on the rules that could run, and the target's
    rules listed as not checked, saying why."""
    path = _current(project, calls.iloc[ROWS:].drop(columns="call seconds"), "no_target.csv")

    completed = _ct_drift(project, path, "--json")

    assert completed.returncode == 0, completed.stderr
    rules = json.loads(completed.stdout)["ingest_rules"]
    assert {rule["column"] for rule in rules["checked"]} == {
        "call date",
        *SPEC["dataset"]["columns"],
    }
    assert rules["not_checked"][0] == (
        "column 'call seconds', rules completeness, target, target_range: "
        "the column is not in CURRENT"
    )


def test_missing_values_break_completeness_in_ingests_words_and_figures(
    project: dict[str, Path], calls: pd.DataFrame
) -> None:
    """The newcomer's finding: `completeness_min` was ingest's rule only; 10 % of a
    feature's values missing now breaks it in `ct drift` too, with the contract exit code."""
    current = calls.iloc[ROWS:].copy()
    current.loc[current.index[: ROWS // 10], "contacts"] = None
    path = _current(project, current, "gaps.csv")

    completed = _ct_drift(project, path, "--json")

    assert completed.returncode == EXIT_CONTRACT_VIOLATIONS, completed.stderr
    ingest = _ingest_failures(project, path)
    assert ingest == [
        "column 'contacts', rule completeness: 90.0% non-missing, 200 missing (minimum 95.0%)"
    ]
    broken = [
        rule
        for rule in json.loads(completed.stdout)["ingest_rules"]["checked"]
        if not rule["passed"]
    ]
    assert [(rule["rule"], rule["column"]) for rule in broken] == [("completeness", "contacts")]
    assert broken[0]["figures"] == {"non_missing_share": 0.9, "n_missing": 200, "min": 0.95}
    assert f"ct drift: {path}: {ingest[0]}\n" in completed.stderr


@pytest.mark.parametrize("sent", ["Client Age", "client age ", "CONTACTS"])
@pytest.mark.parametrize("beside", [False, True])
def test_a_column_named_like_a_spec_column_but_for_case_or_spaces_is_refused(
    project: dict[str, Path], calls: pd.DataFrame, sent: str, beside: bool
) -> None:
    """As the model server refuses it: "did you mean", exit 2, beside or instead of it."""
    current = calls.iloc[ROWS:].copy()
    meant = sent.strip().lower()
    if beside:
        current[sent] = current[meant]
    else:
        current = current.rename(columns={meant: sent})
    path = _current(project, current, "near.csv")

    completed = _ct_drift(project, path)

    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert (
        f"ct drift: {path} header: column {sent!r} is not a column of the spec: did you mean "
        f"{meant!r}? (names must match exactly: case and spaces count)\n"
    ) in completed.stderr


def test_constant_reference_score_is_explained_by_its_distance(
    project: dict[str, Path], calls: pd.DataFrame
) -> None:
    """The first batch has `employees` constant at 5191: Evidently's normed Wasserstein divides
    by its floor 0.001, so 0 to 99 more employees (49.5 on average) score 49,500. The verdict
    stays Evidently's; the note gives the distance in employees."""
    current = calls.iloc[ROWS:].copy()
    current["employees"] = 5191 + current.index % 100
    path = _current(project, current, "more_employees.csv")

    as_json, as_text = _ct_drift(project, path, "--json"), _ct_drift(project, path)

    column = json.loads(as_json.stdout)["columns"]["employees"]
    assert column["method"] == "wasserstein"
    assert column["score"] == pytest.approx(49.5 / 0.001)
    assert column["drift"] is True
    note = (
        "reference constant at 5191 (std 0 < Evidently's floor 0.001, the score's divisor): "
        "current values lie 49.5 from it on average (Wasserstein distance, in the column's units)"
    )
    assert column["note"] == note
    assert f"  ({note})\n" in as_text.stdout
    assert as_json.returncode == as_text.returncode == 0, as_text.stdout
