"""Fixtures for deployment: real bundles (two versions), free ports, a sample request row,
the Docker engine and serving image, and a server of either target with version 1 deployed.

Without a Docker engine the docker tests SKIP, loudly: the reason is printed and raised as a
warning, so a run without Docker can never pass for a run that tested it.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import docker
import pandas as pd
import pytest

from ct_platform.data.contract import check_contract
from ct_platform.deployment import DeploymentError, DeploymentTarget, target_for
from ct_platform.deployment.container import HOME_LABEL, DockerTarget, docker_client
from ct_platform.deployment.export import HOLDOUT_ARTIFACT, default_registry
from ct_platform.governance.lifecycle import set_champion
from ct_platform.registry.mlflow_registry import ModelRegistry, ModelVersionInfo
from ct_platform.settings import Spec, load_spec
from ct_platform.training.bundling import build_bundle
from ct_platform.training.pipeline import build_pipeline
from ct_platform.training.promotion import GATES_PASSED_TAG
from ct_platform_tests.conftest import BANK_SPEC
from ct_platform_tests.deployment.delivery_proofs import progressive
from ct_platform_tests.deployment.wrk_load import wrk_binary

TRAIN_ROWS = 3000
HOLDOUT_ROWS = 500


def cleaned(frame: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    result = check_contract(frame, spec.dataset)
    assert result.passed, result.failed
    return result.clean


def fit_pipeline(spec: Spec, train: pd.DataFrame, max_iter: int) -> Any:
    model = spec.model.model_copy(update={"params": {**spec.model.params, "max_iter": max_iter}})
    pipeline = build_pipeline(spec.model_copy(update={"model": model}))
    return pipeline.fit(train[spec.dataset.feature_columns], train[spec.dataset.target])


def log_versions(
    registry: ModelRegistry, fitted: Any, train: pd.DataFrame, fingerprints: Iterable[str]
) -> None:
    """One registered version per fingerprint (1, 2, ...), all of the `fitted` pipeline: an
    export then reuses the bundles already built under those fingerprints."""
    for fingerprint in fingerprints:
        registry.log_candidate(
            fitted, train=train, params={}, metrics={}, fingerprint=fingerprint, dagster_run_id=None
        )


def register(
    registry: ModelRegistry,
    spec: Spec,
    train: pd.DataFrame,
    holdout: pd.DataFrame | None,
    *,
    fingerprint: str,
    tmp_path: Path,
) -> ModelVersionInfo:
    """Log a trained version the way training does, holdout artifact included."""
    info = registry.log_candidate(
        fit_pipeline(spec, train, max_iter=20),
        train=train,
        params={},
        metrics={},
        fingerprint=fingerprint,
        dagster_run_id=None,
    )
    if holdout is not None:
        path = tmp_path / fingerprint / HOLDOUT_ARTIFACT
        path.parent.mkdir()
        holdout.to_parquet(path, index=False)
        registry.log_artifact(info.run_id, path)
    return info


def with_port(spec: Spec, port: int) -> Spec:
    return spec.model_copy(update={"serving": spec.serving.model_copy(update={"port": port})})


def with_target(spec: Spec, target: str) -> Spec:
    return spec.model_copy(update={"serving": spec.serving.model_copy(update={"target": target})})


def loud_skip(reason: str) -> None:
    print(f"\n{'#' * 72}\n## {reason}\n{'#' * 72}", file=sys.stderr)
    warnings.warn(reason, stacklevel=2)
    pytest.skip(reason)


def free_port_pair() -> int:
    """A free port whose successor is free too (the docker target alternates between both)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as successor:
            try:
                successor.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no pair of free ports found")


@pytest.fixture(scope="session")
def bank_spec() -> Spec:
    return load_spec(BANK_SPEC)


@pytest.fixture(scope="session")
def train_holdout(bank_spec: Spec, bank_frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = cleaned(bank_frame.iloc[: TRAIN_ROWS + HOLDOUT_ROWS], bank_spec)
    return frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:]


@pytest.fixture(scope="session")
def built_bundles(
    bank_spec: Spec,
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """Two real bundles (v1, v2: different models) built once for all target tests."""
    train, holdout = train_holdout
    root = tmp_path_factory.mktemp("bundles")
    return {
        version: build_bundle(
            fit_pipeline(bank_spec, train, max_iter=max_iter),
            bank_spec,
            name=bank_spec.model.name,
            version=version,
            fingerprint=f"test-{version}",
            holdout=holdout,
            directory=root / f"{bank_spec.model.name}-v{version}",
        )
        for version, max_iter in (("1", 20), ("2", 40))
    }


@pytest.fixture
def bundles(built_bundles: dict[str, Path], serving_spec: Spec) -> dict[str, Path]:
    """The two bundles, copied under the test's $CT_HOME/bundles as export leaves them
    (a server's admin API loads only from there)."""
    return {
        version: shutil.copytree(path, serving_spec.paths.bundles / path.name)
        for version, path in built_bundles.items()
    }


@pytest.fixture(scope="session")
def sample_row(bank_spec: Spec, bank_frame: pd.DataFrame) -> dict[str, Any]:
    """One raw row as a client sends it (pdays=999 sentinel included), JSON-safe."""
    row = bank_frame[bank_spec.dataset.feature_columns].iloc[[TRAIN_ROWS + HOLDOUT_ROWS]]
    return json.loads(row.to_json(orient="records"))[0]


@pytest.fixture(scope="session")
def wrk() -> str:
    """The `wrk` binary; without one the test SKIPS, loudly (printed and warned)."""
    binary = wrk_binary()
    if binary is None:
        loud_skip("NO wrk (apt-get install wrk): the delivery proofs under load are SKIPPED")
    return binary


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    try:
        return docker_client()
    except DeploymentError as exc:
        loud_skip(f"{exc}: docker-target tests SKIPPED")
        raise  # unreachable: pytest.skip raises


@pytest.fixture(scope="session")
def serving_image(engine: docker.DockerClient, bank_spec: Spec) -> str:
    """Built once per session (minutes the very first time, seconds when cached)."""
    return DockerTarget(bank_spec, engine).build_image()


def remove_leftover_containers(engine: docker.DockerClient, spec: Spec) -> None:
    """Every container made for this test's CT_HOME (a failed test may leave one)."""
    for leftover in engine.containers.list(
        all=True, filters={"label": f"{HOME_LABEL}={spec.paths.home}"}
    ):
        leftover.remove(force=True)


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def target_spec(request: pytest.FixtureRequest, serving_spec: Spec) -> Spec:
    """The test's spec on the local target, then on the docker target (needs an engine)."""
    if request.param == "docker":
        request.getfixturevalue("serving_image")
    return with_target(serving_spec, request.param)


@pytest.fixture
def serving_target(
    request: pytest.FixtureRequest, target_spec: Spec, bundles: dict[str, Path]
) -> Iterator[DeploymentTarget]:
    """A real server of `target_spec`'s target (a process, or one container) serving version
    1; stopped (and its containers removed) at the end."""
    target = target_for(target_spec)
    try:
        target.deploy(bundles["1"])
        yield target
    finally:
        target.stop()
        if isinstance(target, DockerTarget):
            remove_leftover_containers(request.getfixturevalue("engine"), target_spec)


@pytest.fixture(scope="session")
def load_rows(bank_spec: Spec, bank_frame: pd.DataFrame) -> list[dict[str, Any]]:
    """300 raw rows as clients send them, none trained on; about 15 % hold loan = yes."""
    rows = bank_frame[bank_spec.dataset.feature_columns].iloc[TRAIN_ROWS + HOLDOUT_ROWS + 100 :]
    return json.loads(rows.iloc[:300].to_json(orient="records"))


@pytest.fixture
def two_versions(
    serving_spec: Spec, train_holdout: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> ModelRegistry:
    """MLflow (the test's own store) with versions 1 and 2 registered; 1 is champion."""
    train, _ = train_holdout
    registry = default_registry(serving_spec)
    for fingerprint in ("fp-1", "fp-2"):
        register(registry, serving_spec, train, None, fingerprint=fingerprint, tmp_path=tmp_path)
    set_champion(registry, 1, serving_spec)
    return registry


# Makes a fresh stack: (strategy, gates_passed) -> (spec, registry).
FreshStack = Callable[..., tuple[Spec, ModelRegistry]]


@pytest.fixture
def fresh_stack(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bank_spec: Spec,
    built_bundles: dict[str, Path],
    train_holdout: tuple[pd.DataFrame, pd.DataFrame],
) -> Iterator[FreshStack]:
    """Makes the bank spec under a fresh CT_HOME, on a free port pair, with `strategy`
    (`direct`, or a progressive one with `progressive`'s limits): versions 1 and 2
    registered (their gates recorded as passed if `gates_passed`) with their bundles in
    place (an export reuses them); nothing deployed, no champion. The server it gets is
    stopped at the end."""
    made: list[Spec] = []

    def make(strategy: str = "direct", *, gates_passed: bool = False) -> tuple[Spec, ModelRegistry]:
        monkeypatch.setenv("CT_HOME", str(tmp_path / "ct_home"))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        spec = with_port(bank_spec, free_port_pair())
        if strategy != "direct":
            spec = progressive(spec, strategy)
        made.append(spec)
        for bundle in built_bundles.values():
            shutil.copytree(bundle, spec.paths.bundles / bundle.name)
        registry = default_registry(spec)
        train = train_holdout[0]
        log_versions(registry, fit_pipeline(spec, train, max_iter=20), train, ("test-1", "test-2"))
        if gates_passed:
            for version in (1, 2):
                registry.set_tags(version, {GATES_PASSED_TAG: "true"})
        return spec, registry

    try:
        yield make
    finally:
        for spec in made:
            target_for(spec).stop()


@pytest.fixture
def serving_spec(spec: Spec) -> Spec:
    """The test spec served on a free port pair of its own (tests run beside other servers)."""
    return with_port(spec, free_port_pair())


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """A real Dagster instance in a temp DAGSTER_HOME (what the CLI and sensors read)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance


def slowloris(url: str, count: int) -> list[socket.socket]:
    """`count` clients holding a request each: headers and one byte of a body never sent."""
    address = urlsplit(url)
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    socks = [
        socket.create_connection((address.hostname, address.port), timeout=120)
        for _ in range(count)
    ]
    for sock in socks:
        sock.sendall(head)
    return socks


def assert_still_held(socks: list[socket.socket]) -> None:
    """Each `slowloris` request is still held: no answer, no close."""
    for sock in socks:
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)
