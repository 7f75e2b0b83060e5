"""Contract violations in drift inputs are counted and named, never silently missing.

The newcomer's example: 71 % of `age` sent as "abc" used to read as drift or as "too few
values". Here it is a column verdict of its own, with exact counts, on real CSV and Parquet
files through `ct drift`, and on the serving prediction log through the production check.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ct_platform.cli import main
from ct_platform.cli.drift import (
    EXIT_CONTRACT_VIOLATIONS,
    EXIT_INSUFFICIENT_DATA,
    INGEST_RULES_HEADING,
)
from ct_platform.monitoring.champion_reference import save_champion_reference
from ct_platform.monitoring.production import check_production_drift
from ct_platform.serving.schema import overflow_problem
from ct_platform.settings import Paths, Spec
from ct_platform_tests.monitoring.conftest import as_landed
from ct_platform_tests.monitoring.serving_logs import scored_batch, write_log
from ct_platform_tests.value_cases import AGE_CASES

ROWS = 10_000
AGE = "71 % of 10,000 values unparseable, e.g. 'abc'"
CAMPAIGN = "0.15 % of 10,000 values outside [1, 100] (seen 0 to 150)"
JOB = "3.2 % of 10,000 values in unknown categories: 'crypto-trader' (300), 'astronaut' (20)"
EURIBOR = "0.5 % of 10,000 values unparseable, e.g. '4,857'"
# `ct drift --json`'s "violations", exactly.
VIOLATIONS = {
    "age": {
        "rows": ROWS, "invalid": 7_100, "share": 0.71, "unparseable": 7_100,
        "examples": ["abc"], "overflows": 0, "overflow_examples": [], "infinite": 0,
        "fractional": 0, "fractional_examples": [],
        "out_of_range": 0, "rule": "outside [17, 100]",
        "seen_min": None, "seen_max": None, "seen_as_sent": None, "unknown_categories": 0,
        "distinct_unknown_categories": 0, "most_frequent_unknown": {}, "message": AGE,
    },
    "job": {
        "rows": ROWS, "invalid": 320, "share": 0.032, "unparseable": 0, "examples": [],
        "overflows": 0, "overflow_examples": [], "infinite": 0,
        "fractional": 0, "fractional_examples": [],
        "out_of_range": 0, "rule": None, "seen_min": None, "seen_max": None, "seen_as_sent": None,
        "unknown_categories": 320, "distinct_unknown_categories": 2,
        "most_frequent_unknown": {"crypto-trader": 300, "astronaut": 20}, "message": JOB,
    },
    "campaign": {
        "rows": ROWS, "invalid": 15, "share": 0.0015, "unparseable": 0, "examples": [],
        "overflows": 0, "overflow_examples": [], "infinite": 0,
        "fractional": 0, "fractional_examples": [],
        "out_of_range": 15, "rule": "outside [1, 100]", "seen_min": 0.0, "seen_max": 150.0,
        "seen_as_sent": ["0", "150"],
        "unknown_categories": 0, "distinct_unknown_categories": 0,
        "most_frequent_unknown": {}, "message": CAMPAIGN,
    },
    "euribor3m": {
        "rows": ROWS, "invalid": 50, "share": 0.005, "unparseable": 50,
        "examples": ["4,857"], "overflows": 0, "overflow_examples": [], "infinite": 0,
        "fractional": 0, "fractional_examples": [],
        "out_of_range": 0, "rule": "outside [0, 10]",
        "seen_min": None, "seen_max": None, "seen_as_sent": None, "unknown_categories": 0,
        "distinct_unknown_categories": 0, "most_frequent_unknown": {}, "message": EURIBOR,
    },
}  # fmt: skip


def rows_as_sent(current: pd.DataFrame) -> pd.DataFrame:
    """The first ROWS rows as objects, so a test can plant any value a client might send."""
    return as_landed(current.iloc[:ROWS]).astype(object).reset_index(drop=True)


def broken_current(current: pd.DataFrame) -> pd.DataFrame:
    """10,000 rows as a client might send them: `age` 7,100 times "abc", `campaign` 12
    times 150 and 3 times 0 (spec: [1, 100]), `job` 300 "crypto-trader" and 20 "astronaut",
    `euribor3m` 50 times "4,857" (a decimal comma) and 10 times " 1.2 " (a number with
    spaces: valid). Numbers are text, as in a CSV file."""
    raw = rows_as_sent(current)
    for name in ("age", "campaign", "euribor3m"):
        raw[name] = raw[name].map(lambda v: f"{v:g}")
    raw.loc[: 7_100 - 1, "age"] = "abc"
    raw.loc[100:111, "campaign"] = "150"
    raw.loc[200:202, "campaign"] = "0"
    raw.loc[300:599, "job"] = "crypto-trader"
    raw.loc[600:619, "job"] = "astronaut"
    raw.loc[700:749, "euribor3m"] = "4,857"
    raw.loc[800:809, "euribor3m"] = " 1.2 "
    return raw


@pytest.fixture
def reference_file(spec: Spec, same_distribution, tmp_path: Path) -> Path:
    reference, _ = same_distribution
    path = tmp_path / "reference.csv"
    reference.to_csv(path, sep=spec.dataset.separator, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_violations_are_counted_and_named(
    spec: Spec,
    same_distribution,
    reference_file: Path,
    tmp_path: Path,
    suffix: str,
    capsys: pytest.CaptureFixture,
) -> None:
    _, current = same_distribution
    path = tmp_path / f"current{suffix}"
    raw = broken_current(current)
    if suffix == ".parquet":
        raw.astype({name: "string" for name in raw.columns}).to_parquet(path)
    else:
        raw.to_csv(path, sep=spec.dataset.separator, index=False)

    assert main(["drift", str(reference_file), str(path), "--json"]) == EXIT_CONTRACT_VIOLATIONS
    report = json.loads(capsys.readouterr().out)
    assert report["violations"] == VIOLATIONS
    assert report["columns"]["age"] == {
        "status": "invalid",
        "reason": f"{AGE}; no drift verdict",
        "drift": None,
    }
    # The others keep their verdicts (the broken values they hold are only a few); unknown
    # categories are values the model was given: 3.2 % new mass is drift by Jensen-Shannon.
    assert report["verdict"] == "no drift"
    assert [name for name, c in report["columns"].items() if c["drift"]] == ["job"]
    tested = {name for name, c in report["columns"].items() if c["status"] in ("drift", "no drift")}
    assert tested == set(spec.dataset.feature_columns) - {"age"}

    assert main(["drift", str(reference_file), str(path)]) == EXIT_CONTRACT_VIOLATIONS
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split() for line in lines if line.startswith("age ")] == [
        ["age", "invalid:", *f"{AGE}; no drift verdict".split()]
    ]
    start = lines.index("contract violations (counted apart from drift):")
    assert lines[start + 1 : start + 6] == [
        f"  age: {AGE}",
        f"  job: {JOB}",
        f"  campaign: {CAMPAIGN}",
        f"  euribor3m: {EURIBOR}",
        INGEST_RULES_HEADING,
    ]
    assert lines[-1] == (
        "dataset: no drift (1 of 14 columns drifted, share 0.07, threshold 0.30; "
        "14 of 15 columns tested)"
    )
    assert f"{path} breaks the spec's contract in: age, job, campaign, euribor3m" in err


def test_a_window_of_mostly_unparseable_values_is_named_not_too_few(
    spec: Spec, same_distribution, reference_file: Path, tmp_path: Path, capsys
) -> None:
    """300 rows (a verdict's worth) where `age` is "abc" 213 times: the 87 numbers left are
    below the 100-value minimum, which used to be all it said ("too few values")."""
    _, current = same_distribution
    raw = current.iloc[:300].astype(object).reset_index(drop=True)
    raw.loc[:212, "age"] = "abc"
    path = tmp_path / "current.csv"
    raw.to_csv(path, sep=spec.dataset.separator, index=False)

    assert main(["drift", str(reference_file), str(path), "--json"]) == EXIT_CONTRACT_VIOLATIONS
    report = json.loads(capsys.readouterr().out)
    assert report["columns"]["age"]["reason"] == (
        "71 % of 300 values unparseable, e.g. 'abc'; no drift verdict"
    )
    assert report["violations"]["age"]["unparseable"] == 213


def test_bad_values_among_too_few_are_named_and_all_bad_gives_no_verdict(
    spec: Spec, same_distribution, reference_file: Path, tmp_path: Path, capsys
) -> None:
    """Below the share that withholds a verdict, a column not tested for too few values says
    how many of its values were not numbers. Every column mostly invalid: no dataset verdict
    (exit 3), and it says why."""
    _, current = same_distribution
    raw = current.iloc[:250].astype(object).reset_index(drop=True)
    raw.loc[:119, "age"] = "?"
    raw.loc[120:159, "age"] = None
    path = tmp_path / "current.csv"
    raw.to_csv(path, sep=spec.dataset.separator, index=False)

    assert main(["drift", str(reference_file), str(path), "--json"]) == EXIT_CONTRACT_VIOLATIONS
    report = json.loads(capsys.readouterr().out)
    assert report["columns"]["age"] == {
        "status": "not tested",
        "reason": "too few values: 90 non-missing of 250 rows < minimum 100; "
        "48 % of 250 values unparseable, e.g. '?'",
        "drift": None,
    }

    features = spec.dataset.feature_columns
    raw.assign(**dict.fromkeys(features, "x")).to_csv(path, sep=";", index=False)
    assert main(["drift", str(reference_file), str(path), "--json"]) == EXIT_INSUFFICIENT_DATA
    report = json.loads(capsys.readouterr().out)
    assert report["reason"] == (
        f"insufficient data: no column has enough values to test (mostly invalid: "
        f"{', '.join(features)})"
    )
    assert {name: report["columns"][name]["status"] for name in features} == dict.fromkeys(
        features, "invalid"
    )
    assert report["columns"]["job"]["reason"] == (
        "100 % of 250 values in unknown categories: 'x' (250); no drift verdict"
    )


def test_prediction_log_violations_reach_the_production_check(
    spec: Spec, bank_features: pd.DataFrame, tmp_path: Path
) -> None:
    """Rows the server logged with values outside the contract (an age of 250, a category
    the spec does not list, text in a numeric column) are named by `production_drift`'s
    check, not typed away as missing."""
    paths = Paths.from_env()
    train = tmp_path / "train.parquet"
    bank_features.iloc[:5_000].to_parquet(train)
    save_champion_reference(train, 1, 0.7, spec, paths)
    rows = bank_features.iloc[5_000:5_150].reset_index(drop=True)  # < 200: no verdict
    batch = scored_batch(
        rows, spec.dataset, request_id="r", ts=1.0, positive_proba=np.full(len(rows), 0.5)
    )
    # What a server that serves such values (counting them) would log for them.
    columns = dict(zip(batch.column_names, batch.columns, strict=True))
    columns["age"] = columns["age"].copy()
    columns["age"][:6] = 250.0
    columns["job"] = columns["job"].copy()
    columns["job"][:4] = "crypto-trader"
    columns["previous"] = columns["previous"].astype(object)
    columns["previous"][:2] = "n/a"
    batch.columns[:] = list(columns.values())
    write_log(paths.predictions, [batch])

    drift = check_production_drift(spec, paths, champion=1)

    assert drift.result is not None and drift.result.dataset_drift is None
    assert drift.result.describe_violations() == [
        "age: 4 % of 150 values outside [17, 100] (seen 250 to 250)",
        "job: 2.7 % of 150 values in unknown categories: 'crypto-trader' (4)",
        "previous: 1.3 % of 150 values unparseable, e.g. 'n/a'",
    ]


def test_numbers_outside_the_contract_do_not_move_the_drift_figures(
    spec: Spec,
    same_distribution,
    reference_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """A newcomer's case: 13 ages of 500 among 10,000 turned `age` to drift (Wasserstein
    0.076 -> 0.140) while the report said they were counted apart from drift."""
    _, current = same_distribution
    clean, broken = tmp_path / "clean.csv", tmp_path / "broken.csv"
    current.to_csv(clean, sep=spec.dataset.separator, index=False)
    with_500 = current.copy()
    with_500.loc[:12, "age"] = 500
    with_500.to_csv(broken, sep=spec.dataset.separator, index=False)

    def age(path: Path) -> dict:
        main(["drift", str(reference_file), str(path), "--json"])
        return json.loads(capsys.readouterr().out)

    before, after = age(clean), age(broken)
    assert after["violations"]["age"]["out_of_range"] == 13
    assert after["violations"]["age"]["seen_max"] == 500.0
    # The 13 rows' ages are left out: the same score as the clean file's without those rows.
    assert after["columns"]["age"]["drift"] == before["columns"]["age"]["drift"]
    assert after["columns"]["age"]["score"] == pytest.approx(
        before["columns"]["age"]["score"], abs=0.005
    )


def test_overflows_infinities_and_nan_text_read_as_the_server_reads_them(
    spec: Spec,
    same_distribution,
    reference_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """A newcomer's case: `ct drift` said "seen inf to inf" where the server says "overflows
    to infinity", and called text `NaN` in a number column unparseable where the server
    reads it as missing. Same words for the same fault; the server's missing text."""
    _, current = same_distribution
    raw = rows_as_sent(current)
    for name in ("age", "campaign", "previous"):
        raw[name] = raw[name].map(lambda v: f"{v:g}")
    raw.loc[0:2, "age"] = "1e999"  # too large for float64
    raw.loc[3:4, "age"] = "-1E400"
    raw.loc[5, "age"] = "inf"  # infinity spelled out
    raw.loc[6, "age"] = "-Infinity"
    raw.loc[10:19, "campaign"] = "NaN"  # missing, as the server reads it
    raw.loc[20:24, "campaign"] = " nan "
    raw.loc[25, "campaign"] = "-NaN"
    raw.loc[30:31, "previous"] = "NA"  # the server refuses it as not a number
    raw.loc[40:44, "job"] = "NaN"  # missing in a category column too (`MISSING_TEXT`)
    raw.loc[45, "job"] = " -nan "
    path = tmp_path / "current.csv"
    raw.to_csv(path, sep=spec.dataset.separator, index=False)

    assert main(["drift", str(reference_file), str(path), "--json"]) == EXIT_CONTRACT_VIOLATIONS
    violations = json.loads(capsys.readouterr().out)["violations"]

    # campaign's and job's NaN text is missing, not unparseable and not an unknown category
    assert list(violations) == ["age", "previous"]
    age = violations["age"]
    assert (age["overflows"], age["overflow_examples"], age["infinite"]) == (
        5,
        ["1e999", "-1E400"],
        2,
    )
    assert (age["out_of_range"], age["seen_min"], age["seen_max"]) == (0, None, None)
    assert age["message"] == (
        "0.07 % of 10,000 values invalid: 5 overflow to infinity: beyond float64 "
        "(±1.798e+308), e.g. '1e999', '-1E400'; 2 infinite (not allowed)"
    )
    # The server's words for the same value (`serving.schema`).
    assert overflow_problem("'1e999'") == (
        "'1e999' overflows to infinity: beyond float64 (±1.798e+308)"
    )
    assert violations["previous"]["message"] == "0.02 % of 10,000 values unparseable, e.g. 'NA'"


def test_fractions_in_an_int_column_are_violations_as_the_server_refuses_them(
    spec: Spec,
    same_distribution,
    reference_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """A newcomer's case: 200 rows with age 30.5 and campaign 1.5 gave `ct drift` exit 0,
    "within the contract", while the server refuses each ("expected an integer, got 30.5")."""
    assert (spec.dataset.columns["age"].type, spec.dataset.columns["campaign"].type) == (
        "int",
        "int",
    )
    _, current = same_distribution
    raw = rows_as_sent(current)
    raw.loc[0:199, "age"] = 30.5
    raw.loc[0:199, "campaign"] = 1.5
    raw.loc[200:209, "campaign"] = 2.0  # an integer written with a point: fine
    path = tmp_path / "current.csv"
    raw.to_csv(path, sep=spec.dataset.separator, index=False)

    assert main(["drift", str(reference_file), str(path), "--json"]) == EXIT_CONTRACT_VIOLATIONS
    violations = json.loads(capsys.readouterr().out)["violations"]

    assert sorted(violations) == ["age", "campaign"]
    for name, shown in (("age", "30.5"), ("campaign", "1.5")):
        assert (violations[name]["fractional"], violations[name]["fractional_examples"]) == (
            200,
            [shown],
        )
        assert violations[name]["message"] == (
            f"2 % of 10,000 values not integers (an int column), e.g. '{shown}'"
        )


def _write(raw: pd.DataFrame, path: Path, spec: Spec, **csv_options: str) -> None:
    if path.suffix == ".parquet":
        raw.astype({name: "string" for name in raw.columns}).to_parquet(path)
    else:
        raw.to_csv(path, sep=spec.dataset.separator, index=False, **csv_options)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_every_age_value_is_counted_as_the_server_reads_it(
    spec: Spec,
    same_distribution,
    reference_file: Path,
    tmp_path: Path,
    suffix: str,
    capsys: pytest.CaptureFixture,
) -> None:
    """`value_cases.AGE_CASES` as text in one file: what the server accepts is no violation,
    what it refuses is counted under the kind that says the same, quoted as sent (the
    newcomer's example: text `1e-400` was shown as `seen 0 to 0`; the server quotes it)."""
    _, current = same_distribution
    raw = rows_as_sent(current)
    raw["age"] = raw["age"].map(lambda v: f"{v:g}")
    for index, case in enumerate(AGE_CASES):
        raw.loc[index, "age"] = case.text
    path = tmp_path / f"current{suffix}"
    _write(raw, path, spec)

    assert main(["drift", str(reference_file), str(path), "--json"]) == EXIT_CONTRACT_VIOLATIONS
    age = json.loads(capsys.readouterr().out)["violations"]["age"]

    kinds = Counter(case.drift_kind for case in AGE_CASES if case.drift_kind)
    counted = {kind: age[kind] for kind in kinds}
    assert counted == dict(kinds)
    assert age["invalid"] == sum(kinds.values())
    assert age["examples"] == [c.text for c in AGE_CASES if c.drift_kind == "unparseable"]
    assert age["overflow_examples"] == ["1e999"]
    assert age["fractional_examples"] == ["30.5"]  # 30.50 is the same number
    assert age["seen_as_sent"] == ["1e-400", "500"]
    assert (age["seen_min"], age["seen_max"]) == (0.0, 500.0)
    assert "3 outside [17, 100] (seen 1e-400 to 500)" in age["message"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_column_named_twice_is_refused_by_name(
    spec: Spec,
    same_distribution,
    reference_file: Path,
    tmp_path: Path,
    suffix: str,
    capsys: pytest.CaptureFixture,
) -> None:
    """The newcomer's case: a second `age` column (pandas reads it as `age.1`) must not
    pass unnoticed; the server refuses such a request by name too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, current = same_distribution
    raw = rows_as_sent(current)
    names = list(raw.columns)
    path = tmp_path / f"current{suffix}"
    if suffix == ".parquet":
        table = pa.Table.from_pandas(raw.astype("string"), preserve_index=False)
        pq.write_table(table.append_column("age", table.column("age")), path)
        where = str(path)
    else:
        raw.assign(extra=raw["age"]).to_csv(path, sep=spec.dataset.separator, index=False)
        text = path.read_text()
        path.write_text(text.replace("extra", "age", 1))
        where = f"{path} header"

    assert main(["drift", str(reference_file), str(path)]) == 2
    assert capsys.readouterr().err == (
        f"ct drift: {where}: column(s) named more than once: 'age' (positions "
        f"{names.index('age')} and {len(names)}); name each once\n"
    )


def test_a_csv_with_a_utf8_byte_order_mark_reads_as_without(
    spec: Spec,
    same_distribution,
    reference_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """Excel writes a BOM first: `ct drift` reads such a file as the server reads such a
    request (the BOM ignored), whether the first column is a number or a category."""
    _, current = same_distribution
    raw = broken_current(current)
    results = []
    for encoding in ("utf-8", "utf-8-sig"):
        for frame in (raw, raw[list(reversed(raw.columns))]):
            path = tmp_path / f"current-{encoding}-{frame.columns[0]}.csv"
            _write(frame, path, spec, encoding=encoding)
            report = main(["drift", str(reference_file), str(path), "--json"])
            assert report == EXIT_CONTRACT_VIOLATIONS
            results.append(json.loads(capsys.readouterr().out))
    assert path.read_bytes().startswith("\ufeff".encode())
    assert results[2:] == results[:2]
    assert results[0]["violations"] == VIOLATIONS
