"""The `endpoint` target against a real `ct serve` process that the test runs, as compose runs
the `model-server` service: deploys and rollouts go into that server through its admin API,
and the target never starts a server of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from ct_platform.deployment import DeploymentError, target_for, wait_healthy
from ct_platform.deployment.controller import RolloutController, RolloutStore
from ct_platform.deployment.export import default_registry
from ct_platform.deployment.remote import EndpointTarget
from ct_platform.deployment.rollout import admin_client, roll_out
from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry.versions import CANARY, CHAMPION
from ct_platform.settings import Spec, SpecError, load_spec
from ct_platform_tests.deployment.conftest import fit_pipeline, free_port_pair, log_versions

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class RemoteServer:
    """The server the target drives: a `ct serve` process this test started, not the target."""

    spec: Spec
    url: str
    process: subprocess.Popen[bytes]


def served(url: str, row: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/invocations", json={"dataframe_records": [row]}, timeout=60)


def servers_on(bundles: Path, ours: int) -> list[str]:
    """Command lines of server processes (other than `ours`) serving from `bundles`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == ours:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(bundles) in cmdline and "serv" in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture
def remote(
    spec_file: Path,
    serving_spec: Spec,
    bundles: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[RemoteServer]:
    """`ct serve` on version 1 on a free port, with the token the platform keeps in CT_HOME
    (printed by the same command compose's model-server runs); the spec says, through the
    environment as compose does, that the endpoint target drives it."""
    url = f"http://127.0.0.1:{serving_spec.serving.port}"
    monkeypatch.setenv("CT_SERVING_TARGET", "endpoint")
    monkeypatch.setenv("CT_SERVING_ENDPOINT_URL", url)
    spec = load_spec(spec_file)
    token = subprocess.run(
        [sys.executable, "-m", "ct_platform.deployment", "admin-token"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    log = (tmp_path / "remote-server.log").open("wb")
    port = str(serving_spec.serving.port)
    serve = [str(Path(sys.executable).parent / "ct"), "serve", "--bundle", str(bundles["1"])]
    process = subprocess.Popen(
        [*serve, "--host", "127.0.0.1", "--port", port],
        env={**os.environ, spec.serving.admin_token_env: token},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(url, START_TIMEOUT_S, still_starting=lambda: process.poll() is None)
        yield RemoteServer(spec, url, process)
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def test_the_spec_needs_the_endpoint_url(spec_file: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CT_SERVING_TARGET", "endpoint")
    with pytest.raises(SpecError, match=r"serving\.endpoint_url"):
        load_spec(spec_file)


def test_deploy_hot_swaps_the_running_server_and_starts_none(
    remote: RemoteServer, bundles: dict[str, Path], sample_row: dict[str, Any]
) -> None:
    target = target_for(remote.spec)
    assert isinstance(target, EndpointTarget) and target.url == remote.url
    assert target.status() is None  # the server runs, but this target deployed nothing yet
    answers: list[httpx.Response] = []
    done = threading.Event()

    def traffic() -> None:
        while not done.is_set():
            answers.append(served(remote.url, sample_row))

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        endpoint = target.deploy(bundles["2"])
    finally:
        done.set()
        sender.join()

    assert (endpoint.url, endpoint.version, endpoint.target) == (remote.url, "2", "endpoint")
    after = served(remote.url, sample_row)
    assert after.status_code == 200 and after.headers["x-model-version"] == "2"
    # Traffic during the swap: every request answered, by version 1 or 2.
    assert answers and all(answer.status_code == 200 for answer in answers)
    assert {answer.headers["x-model-version"] for answer in answers} <= {"1", "2"}
    # The same process serves; the target started no server of its own.
    assert remote.process.poll() is None
    assert servers_on(remote.spec.paths.bundles, remote.process.pid) == []
    assert not (remote.spec.paths.deployments / "local.json").exists()
    status = target.status()
    assert status is not None and status.healthy and status.endpoint == endpoint

    target.stop()  # forgets the deployment; the server is its owner's
    assert target.status() is None and remote.process.poll() is None


def test_a_bundle_outside_the_shared_folder_is_refused(
    remote: RemoteServer, built_bundles: dict[str, Path]
) -> None:
    with pytest.raises(DeploymentError, match="not under"):
        target_for(remote.spec).deploy(built_bundles["2"])


def test_a_server_that_never_answers_fails_the_deploy_naming_it(
    remote: RemoteServer, bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port_pair()
    monkeypatch.setenv("CT_SERVING_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr("ct_platform.deployment.remote.READY_TIMEOUT_S", 1.0)
    target = target_for(load_spec(os.environ["CT_SPEC"]))
    with pytest.raises(DeploymentError, match=rf"never starts a server.*127\.0\.0\.1:{port}"):
        target.deploy(bundles["2"])
    assert servers_on(remote.spec.paths.bundles, remote.process.pid) == []


def test_a_canary_rollout_runs_in_the_endpoint(
    remote: RemoteServer,
    bundles: dict[str, Path],
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
    sample_row: dict[str, Any],
) -> None:
    """deployed_endpoint's `roll_out` with `deployment.strategy: canary`: the candidate goes
    into the running server beside the champion, and the completed rollout is recorded."""
    deployment = remote.spec.deployment.model_copy(update={"strategy": "canary"})
    spec = remote.spec.model_copy(update={"deployment": deployment})
    registry = default_registry(spec)
    fitted = fit_pipeline(spec, train_holdout[0], max_iter=20)
    # Versions 1 and 2 with the bundles' fingerprints: the export reuses those bundles.
    log_versions(registry, fitted, train_holdout[0], ("test-1", "test-2"))
    set_champion(registry, 1, spec)
    target = target_for(spec)
    target.deploy(bundles["1"])
    registry.set_alias(CANARY, 2)  # what the champion asset does under a progressive strategy

    endpoint = roll_out(spec, registry).endpoint

    admin = admin_client(spec)
    assert admin.url == remote.url and endpoint.version == "1"
    slots = admin.slots()
    assert (slots["stable"]["version"], slots["candidate"]["version"]) == ("1", "2")
    assert slots["candidate_weight"] == spec.deployment.canary.steps[0] / 100
    rollout = RolloutStore(spec.paths.rollouts).read()
    assert rollout is not None and (rollout.strategy, rollout.version) == ("canary", "2")

    RolloutController(spec, admin, registry).control("promote", "test")

    assert registry.alias_version(CHAMPION).version == 2
    assert served(remote.url, sample_row).headers["x-model-version"] == "2"
    status = target.status()
    assert status is not None and status.endpoint.version == "2"
    assert Path(status.endpoint.bundle) == bundles["2"].resolve()
    assert remote.process.poll() is None
    assert servers_on(spec.paths.bundles, remote.process.pid) == []
