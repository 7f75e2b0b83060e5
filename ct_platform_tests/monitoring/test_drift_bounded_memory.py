"""`ct drift` holds a bounded amount of memory whatever CURRENT's row count and row groups,
and its streamed ingest rules are ingest's on the whole file.

Memory is measured in bytes allocated (tracemalloc for numpy and Python objects, Arrow's
pool for Arrow buffers), which a busy box does not change; never in time or RSS. The sizes
are scaled down (8,192-row batches, 256 KiB CSV blocks, 5,000-value samples) so that files
of 160,000 and 640,000 rows are already many batches, and each column chunk of the smaller
file spans several of the writer's 1 MB pages (a page is read whole: a fixed cost).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
import yaml

from ct_platform.data.contract import TimeAndTargetRules, check_contract
from ct_platform.data.reader import read_batch
from ct_platform.monitoring import sources
from ct_platform.monitoring.sources import column_chunks
from ct_platform.settings import load_spec
from ct_platform_tests.conftest import BANK_SPEC, REPO_ROOT

# One `ct drift` run in a fresh process, after a warm-up run (imports, caches): prints its
# exit code, JSON report, tracemalloc peak and Arrow's peak of the measured run.
MEASURE = """
import argparse, contextlib, io, json, sys, tracemalloc
from pathlib import Path
import pyarrow as pa
from ct_platform.cli import drift
from ct_platform.monitoring import drift as checks, sources
sources.BATCH_ROWS, sources.CSV_BLOCK_BYTES, checks.SAMPLE_ROWS = 8_192, 256 * 1024, 5_000

def run(reference, current):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = drift.run(argparse.Namespace(reference=Path(reference), current=Path(current),
                                            json=True))
    return code, json.loads(out.getvalue())

run(sys.argv[1], sys.argv[1])
tracemalloc.start()
code, report = run(sys.argv[1], sys.argv[2])
print(json.dumps({"code": code, "report": report, "traced": tracemalloc.get_traced_memory()[1],
                  "arrow": pa.default_memory_pool().max_memory()}))
"""
SMALL, LARGE = 160_000, 640_000
CONTINUOUS = ["emp.var.rate", "cons.price.idx", "cons.conf.idx", "euribor3m", "nr.employed"]


def _bank_rows(bank: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """`rows` bank rows drawn at random, the continuous columns jittered (as real data is:
    not 41,188 atoms that compress to nothing)."""
    rng = np.random.default_rng(seed)
    frame = bank.iloc[rng.integers(0, len(bank), rows)].reset_index(drop=True)
    for name in CONTINUOUS:
        frame[name] = frame[name] + rng.normal(0, 0.01 * bank[name].std(), rows)
    return frame


def _write(frame: pd.DataFrame, path: Path) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if path.suffix == ".csv":
        options = pv.WriteOptions(delimiter=";", quoting_style="none")
        pv.write_csv(table, path, write_options=options)
    else:  # one row group, however many rows: what a writer of one table gives
        pq.write_table(table, path, len(frame))
    return path


def _measure(reference: Path, current: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE, str(reference), str(current)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,  # `-c` imports this checkout's ct_platform
        env={**os.environ, "CT_SPEC": str(BANK_SPEC)},
        check=True,
        timeout=600,
    )
    return json.loads(completed.stdout.splitlines()[-1])


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_memory_does_not_grow_with_currents_rows(
    bank_frame: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    """4x the rows (one Parquet row group, or CSV): numpy and Python memory and Arrow's both
    stay within 25 % of the smaller run's. Before, the whole target went to pandas (traced
    peak x3.8 here, 900 MB at 10M rows) and a row group's column chunks were read whole
    (Arrow peak x2.0)."""
    reference = _write(_bank_rows(bank_frame, 20_000, seed=1), tmp_path / f"reference{suffix}")
    small, large = (
        _measure(reference, _write(_bank_rows(bank_frame, rows, 2), tmp_path / f"{rows}{suffix}"))
        for rows in (SMALL, LARGE)
    )

    for run, rows in ((small, SMALL), (large, LARGE)):
        assert run["code"] == 0, run["report"]
        target = next(r for r in run["report"]["ingest_rules"]["checked"] if r["rule"] == "target")
        assert target["figures"]["n_present"] == rows  # every chunk of y was counted
    for measure in ("traced", "arrow"):
        assert large[measure] < 1.25 * small[measure], (measure, small[measure], large[measure])


CLASSIFICATION = {
    "dataset": {
        "name": "calls",
        "target": "y",
        "task": "classification",
        "target_labels": [0, 1],
        "time_column": "day",
        "min_rows": 1,
        "columns": {"day": {"type": "date", "format": "%Y-%m-%d"}, "age": {"type": "int"}},
    },
    "model": {"name": "calls", "estimator": "sklearn.linear_model.LogisticRegression"},
    "evaluation": {"primary_metric": "roc_auc"},
    "gates": {"metric_floor": {"threshold": 0.5}},
}
REGRESSION = {
    **CLASSIFICATION,
    "dataset": {
        **CLASSIFICATION["dataset"],
        "task": "regression",
        "target_labels": None,
        "target_rules": {"min": 0, "max": 6000},
    },
    "model": {"name": "calls", "estimator": "sklearn.linear_model.Ridge"},
    "evaluation": {"primary_metric": "rmse"},
}


def _calls(task: str) -> pd.DataFrame:
    """5,000 rows whose faults fall in different chunks and row groups: bad dates of 7
    kinds (more than the 5 examples quoted, the 6th only in a late chunk), a missing day,
    and a target with invalid values early and late and its only nulls in the last rows."""
    rows = 5_000
    days = pd.date_range("2009-01-01", periods=rows, freq="h").strftime("%Y-%m-%d").to_numpy()
    days = days.astype(object)
    for row, text in [(10, "2009-13-01"), (1_500, "yesterday"), (1_501, "2009-02-30")]:
        days[row] = text
    for row, text in [(2_400, "01/02/2009"), (2_500, "2009-13-01"), (3_100, "2009.03.01")]:
        days[row] = text
    days[4_200], days[4_300], days[4_400] = "soon", "later", None
    target: list[object]
    if task == "classification":
        target = [row % 2 for row in range(rows)]
        target[20], target[3_900] = 9, 7
    else:
        target = [float(row % 700) for row in range(rows)]
        target[20], target[2_222], target[3_900] = -5.0, 7_000.0, -1e300
    target[-3:] = [None, None, None]
    kind = "Int64" if task == "classification" else "float64"
    return pd.DataFrame({"day": days, "age": 40, "y": pd.array(target, dtype=kind)})


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("layout", ["row groups", "row groups without statistics", "csv"])
def test_streamed_time_and_target_rules_are_ingests_on_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str, layout: str
) -> None:
    """Chunk by chunk, the same results as ingest's contract on the file read whole, in
    the same words and figures: counts, examples in first-seen order, extremes, and an
    integer target with nulls only in its last row group read as pandas reads the whole
    column (float64: '9.0', not '9')."""
    monkeypatch.setattr(sources, "BATCH_ROWS", 1_000)
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 16 * 1024)  # about 1,000 rows here
    spec_path = tmp_path / "ct_platform.yaml"
    spec_path.write_text(yaml.safe_dump(CLASSIFICATION if task == "classification" else REGRESSION))
    dataset = load_spec(spec_path).dataset
    frame = _calls(task)
    if layout == "csv":
        path = tmp_path / "calls.csv"
        frame.to_csv(path, sep=dataset.separator, index=False)
    else:
        path = tmp_path / "calls.parquet"
        kind = pa.int64() if task == "classification" else pa.float64()
        table = pa.table(
            {name: pa.array(frame[name], kind if name == "y" else None) for name in frame}
        )  # no pandas metadata: read back as numpy types, as a file from elsewhere
        pq.write_table(table, path, row_group_size=1_500, write_statistics=layout == "row groups")

    streamed = TimeAndTargetRules(dataset, ["day", "y"])
    chunks = 0
    for chunk in column_chunks(path, dataset, ["day", "y"]):
        streamed.add(chunk)
        chunks += 1
    assert chunks >= 5

    whole = check_contract(read_batch(path, dataset), dataset)
    expected = [rule for rule in whole.rules if rule.column in ("day", "y")]
    assert streamed.results() == expected
    failed = {(rule.rule, rule.column) for rule in expected if not rule.passed}
    target_rule = "target" if task == "classification" else "target_range"
    assert failed == {("completeness", "day"), ("type", "day"), (target_rule, "y")}
