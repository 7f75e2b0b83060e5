"""`dagster job execute` as CI calls it: exit codes and the message naming the failed gate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ct_platform.governance.audit import current_user, read_events
from ct_platform.governance.lifecycle import record_gate_rejection
from ct_platform.serving.bundle import read_meta
from ct_platform_tests.defs.conftest import STRICT_FLOOR, spec_variant

pytestmark = pytest.mark.slow
DAGSTER = Path(sys.executable).with_name("dagster")
# What a CI user runs.
TRAINING_JOB_COMMAND = [str(DAGSTER), "job", "execute", "-m", "ct_platform.definitions"]
TRAINING_JOB_COMMAND += ["-j", "training_job"]


def dagster_job_execute(spec_path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    dagster_home = tmp_path / "cli_dagster_home"
    dagster_home.mkdir(exist_ok=True)
    env = {**os.environ, "CT_SPEC": str(spec_path), "DAGSTER_HOME": str(dagster_home)}
    # Generous: on the shared 2-core box under load a single CLI run took over 10 minutes.
    return subprocess.run(
        TRAINING_JOB_COMMAND, env=env, capture_output=True, text=True, timeout=1800
    )


def test_no_valid_data_exits_non_zero(spec_file, tmp_path):
    result = dagster_job_execute(spec_file, tmp_path)

    assert result.returncode != 0
    assert "no valid data" in result.stdout + result.stderr


# Two full CLI runs, each importing the code location afresh: slow on a loaded 2-core box.
@pytest.mark.timeout(3600)
def test_success_then_failing_gate(spec_file, tmp_path, land_bank_batches):
    land_bank_batches(2)
    passing = dagster_job_execute(spec_file, tmp_path)
    assert passing.returncode == 0, passing.stderr[-3000:]

    land_bank_batches(1, first=2)
    failing = dagster_job_execute(spec_variant(spec_file, "strict", STRICT_FLOOR), tmp_path)

    assert failing.returncode != 0
    output = failing.stdout + failing.stderr
    # A rejection, not a crash: the gate and its figures, and no Python traceback.
    # Version 1 is the first holdout fit, version 2 its whole-window refit (the champion).
    assert "candidate version 3 rejected by blocking gate(s) metric_floor" in output
    assert re.search(r"metric_floor: roc_auc 0\.\d{4} misses the floor 0\.9990", output), output
    assert "Traceback" not in output


def parity_evaluations(dagster_home: Path) -> list[dg.AssetCheckEvaluation]:
    """The `onnx_parity` evaluations of `model_bundle` (the export's re-check; the refit has
    its own before promotion) recorded by the CLI runs in `dagster_home`."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        records = [
            record
            for run in instance.get_runs()
            for record in instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ).records
        ]
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    return [
        e
        for e in evaluations
        if e.check_name == "onnx_parity" and e.asset_key == dg.AssetKey("model_bundle")
    ]


@pytest.mark.timeout(1800)
def test_ci_job_leaves_a_reported_and_exported_champion(
    spec_file, spec, tmp_path, land_bank_batches
):
    land_bank_batches(2)

    passing = dagster_job_execute(spec_file, tmp_path)

    assert passing.returncode == 0, passing.stderr[-3000:]
    for name in ("model_quality.html", "data_drift.html"):
        assert (spec.paths.reports / f"{spec.model.name}-v1" / name).stat().st_size > 10_000
    # The champion, and so the bundle, is version 1's whole-window refit: version 2.
    bundle = read_meta(spec.paths.bundles / f"{spec.model.name}-v2")
    assert bundle.version == "2" and bundle.parity is not None
    assert bundle.semver == "1.0.1"
    assert bundle.onnx.enabled and bundle.parity.passed and bundle.parity.rows_over == 0
    (parity,) = parity_evaluations(tmp_path / "cli_dagster_home")
    assert parity.passed and parity.metadata["max_abs_diff"].value == bundle.parity.max_abs_diff
    # The audit log names what started the promotion: this CLI, run by this OS user.
    history = subprocess.run(
        [str(DAGSTER.with_name("ct")), "history", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    promotions = [e for e in json.loads(history.stdout) if e["kind"] == "promotion"]
    assert [(e["to_version"], e["actor"]) for e in promotions] == [
        (2, f"{current_user()} via dagster job execute")
    ]


@pytest.mark.timeout(1800)
def test_ci_job_reports_a_rejected_candidate_and_exports_nothing(
    spec_file, spec, tmp_path, land_bank_batches
):
    land_bank_batches(2)

    failing = dagster_job_execute(spec_variant(spec_file, "strict", STRICT_FLOOR), tmp_path)

    assert failing.returncode != 0
    assert "metric_floor" in failing.stdout + failing.stderr
    report = spec.paths.reports / f"{spec.model.name}-v1" / "model_quality.html"
    assert report.stat().st_size > 10_000
    assert not any(spec.paths.bundles.iterdir())
    assert parity_evaluations(tmp_path / "cli_dagster_home") == []
    # The rejection is in the audit log (`ct history`), with the gate and its figures, once.
    [rejection] = [e for e in read_events() if e.kind == "gate_rejection"]
    assert (rejection.model, rejection.from_version, rejection.to_version) == (
        spec.model.name,
        None,
        1,
    )
    assert rejection.actor == f"{current_user()} via dagster job execute"
    assert rejection.reason.startswith("candidate version 1 rejected by blocking gate(s) ")
    assert re.search(
        r"the champion stays \(none\): metric_floor: roc_auc 0\.\d+ ", rejection.reason
    )
    logged = read_events()
    again = record_gate_rejection(spec.model.name, 1, None, "judged again", dagster_run_id="rerun")
    assert again is None and read_events() == logged
