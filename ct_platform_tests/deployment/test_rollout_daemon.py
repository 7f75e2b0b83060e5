"""The demo's canary, as Dagster shows it: each new champion's rollout advances step by step.

What `make demo` runs, minus training (a trained version is registered directly): the
demo's canary spec (deploy/demo.sh) with a short analysis interval, a real Dagster daemon
(`dagster-daemon run` on the code location, a temp DAGSTER_HOME), a real local server,
real MLflow, and live traffic from `ct simulate --endpoint` (no batches). For each new
version holding `canary` (what the `champion` asset does under a progressive strategy),
`deployed_endpoint` is materialized through the Dagster CLI (what automation runs after a
new champion's bundle): the rollout starts, and the daemon's
`rollout_sensor` alone moves it 20 -> 40 -> 60 -> 80 -> 100 %. The test reads the
instance's event log: one `rollout` materialization per analysis, with step, weight and
analysis figures, ending in `completed`; then the next version does the same.

The instance's run queue holds every run the other sensors and schedules request (drift,
the watchdog): nothing but the rollout moves, on a shared box. Nothing here depends on
speed: each wait is a guard against a rollout that never ends (a bug).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import yaml

from ct_platform.defs.serving.rollout import ROLLOUT
from ct_platform.deployment import target_for
from ct_platform.deployment.export import default_registry
from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry.mlflow_registry import ModelRegistry
from ct_platform.registry.versions import CANARY, CHAMPION
from ct_platform.settings import Spec, load_spec
from ct_platform.training.bundling import build_bundle
from ct_platform_tests.conftest import BANK_CSV, REPO_ROOT
from ct_platform_tests.deployment.conftest import fit_pipeline

# Two rollouts through a real daemon: minutes on a quiet box, more on a loaded one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

BIN = Path(sys.executable).parent
# Guards against a rollout that never ends, not performance expectations.
DAEMON_READY_S = 600.0
ROLLOUT_LIMIT_S = 900.0
STEPS = [20.0, 40.0, 60.0, 80.0, 100.0]


@pytest.fixture
def demo_spec(spec_file: Path, monkeypatch: pytest.MonkeyPatch) -> Spec:
    """The test spec with the demo's canary section (deploy/demo.sh), a 1 s interval."""
    raw = yaml.safe_load(spec_file.read_text())
    raw["deployment"] = {
        "strategy": "canary",
        # The score-shift check keeps its defaults: over the limit it must also be beyond
        # sampling noise at the period's counts, which 30 requests of a good model are not.
        "analysis": {"interval_seconds": 1, "min_requests": 30, "p99_latency_ms_max": 5000},
        "canary": {"steps": [int(step) for step in STEPS]},
    }
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("CT_SERVING_PORT", str(free_port()))
    return load_spec(spec_file)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    settings = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    settings["run_coordinator"]["config"]["max_concurrent_runs"] = 0  # see the docstring
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def versions(
    demo_spec: Spec,
    built_bundles: dict[str, Path],
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
) -> ModelRegistry:
    """Versions 1, 2, 3 in MLflow with their bundles in place (an export reuses them); 1 is
    champion. Version 3 is one more good model (more boosting iterations)."""
    train, holdout = train_holdout
    bundles = demo_spec.paths.bundles
    for bundle in built_bundles.values():
        shutil.copytree(bundle, bundles / bundle.name)
    third = fit_pipeline(demo_spec, train, max_iter=60)
    build_bundle(
        third,
        demo_spec,
        name=demo_spec.model.name,
        version="3",
        fingerprint="test-3",
        holdout=holdout,
        directory=bundles / f"{demo_spec.model.name}-v3",
    )
    registry = default_registry(demo_spec)
    for fingerprint in ("test-1", "test-2", "test-3"):
        registry.log_candidate(
            third, train=train, params={}, metrics={}, fingerprint=fingerprint, dagster_run_id=None
        )
    set_champion(registry, 1, demo_spec)
    return registry


@pytest.fixture
def serving(demo_spec: Spec, versions: ModelRegistry) -> Iterator[str]:
    target = target_for(demo_spec)
    endpoint = target.deploy(demo_spec.paths.bundles / f"{demo_spec.model.name}-v1")
    try:
        yield endpoint.url
    finally:
        target.stop()


@pytest.fixture
def daemon(
    dagster_home: Path, demo_spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> Iterator[subprocess.Popen[bytes]]:
    # As deploy/demo.sh: a loaded box answers sensor calls slowly (Dagster's default: 60 s).
    monkeypatch.setenv("DAGSTER_GRPC_TIMEOUT_SECONDS", "180")
    log = (dagster_home / "daemon.log").open("wb")
    process = subprocess.Popen(
        [BIN / "dagster-daemon", "run", "-w", str(REPO_ROOT / "workspace.yaml")],
        cwd=dagster_home,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop(process)
        log.close()


@pytest.fixture
def traffic(serving: str, demo_spec: Spec) -> Iterator[subprocess.Popen[bytes]]:
    """`ct simulate --endpoint` live traffic (labels 5 s later), no batches."""
    process = subprocess.Popen(
        [
            BIN / "ct",
            "simulate",
            "--max-batches",
            "0",
            "--endpoint",
            serving,
            "--rps",
            "30",
            "--label-delay",
            "5",
            "--source",
            str(BANK_CSV),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def materialize_new_champion(dagster_home: Path) -> None:
    """What automation runs after a new champion's bundle: `deployed_endpoint` (it exports
    the `canary` version's bundle itself) starts the rollout. (`model_bundle`'s security
    checks take minutes on a loaded box and are not what this test is about.)"""
    done = subprocess.run(
        [
            BIN / "dagster",
            "asset",
            "materialize",
            "-m",
            "ct_platform.definitions",
            "--select",
            "deployed_endpoint",
        ],
        cwd=dagster_home,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def rollout_events(instance: dg.DagsterInstance, rollout_id: str) -> list[dict[str, Any]]:
    """The `rollout` materializations of one rollout, oldest first, as plain values."""
    records = instance.fetch_materializations(ROLLOUT, limit=1000, ascending=True).records
    found = []
    for record in records:
        materialization = record.asset_materialization
        assert materialization is not None
        metadata = {key: value.value for key, value in materialization.metadata.items()}
        if metadata.get("rollout_id") == rollout_id:
            found.append(metadata)
    return found


def wait_for_completion(
    instance: dg.DagsterInstance, rollout_id: str, daemon: subprocess.Popen[bytes], log: Path
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + ROLLOUT_LIMIT_S
    while time.monotonic() < deadline:
        assert daemon.poll() is None, log.read_text()[-3000:]
        events = rollout_events(instance, rollout_id)
        if events and events[-1]["status"] != "running":
            return events
        time.sleep(2)
    raise AssertionError(f"rollout {rollout_id} not over in {ROLLOUT_LIMIT_S:g} s")


def test_each_new_champion_rolls_out_step_by_step_in_dagster(
    demo_spec: Spec,
    dagster_home: Path,
    versions: ModelRegistry,
    serving: str,
    daemon: subprocess.Popen[bytes],
    traffic: subprocess.Popen[bytes],
) -> None:
    from ct_platform.deployment.controller import RolloutStore

    store = RolloutStore(demo_spec.paths.rollouts)
    with dg.DagsterInstance.get() as instance:
        for version in (2, 3):
            versions.set_alias(CANARY, version)
            materialize_new_champion(dagster_home)
            rollout = store.read()
            assert rollout is not None and rollout.version == str(version), rollout

            events = wait_for_completion(instance, rollout.id, daemon, dagster_home / "daemon.log")

            # One materialization per history entry (start, each analysis, completion), as
            # the rollout was right after it: each pass at a step shows the next step's
            # weight; the pass at 100 % completes it.
            assert events[0]["verdict"] == "start", events[0]
            assert events[-1]["status"] == "completed", events[-1]
            assert events[-1]["weight_percent"] == 100.0, events[-1]
            passes = [event for event in events if event["verdict"] == "pass"]
            assert [event["weight_percent"] for event in passes] == [*STEPS[1:], 100.0], events
            assert [event["step"] for event in passes] == [1, 2, 3, 4, 4], events
            for event in passes:
                assert event["analysis/candidate_requests"] >= 30, event
                assert event["analysis/candidate_error_rate"] == 0.0, event
            # At 100 % stable answers next to nothing (requests routed before the weight
            # moved): the candidate's latency is judged against stable's in the latest
            # earlier period where stable answered enough, not on the limit alone (a
            # loaded box slowing it rolled a good candidate back).
            at_full = passes[-1]
            before = [e for e in passes[:-1] if e["analysis/stable_answered"] >= 30]
            assert at_full["analysis/stable_answered"] < 30, at_full
            assert (
                at_full["analysis/reference_stable_answered"]
                == before[-1]["analysis/stable_answered"]
            ), events
            assert versions.alias_version(CHAMPION).version == version  # type: ignore[union-attr]
            assert versions.alias_version(CANARY) is None
