"""`ct serve`: explicit bundle, MLflow's champion by default, a clear error without one."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd

from ct_platform.governance.lifecycle import set_champion
from ct_platform_tests.serving.conftest import free_port, wait_until_up

# The `ct` entry point of this venv.
CT = [str(Path(sys.executable).parent / "ct")]


def _serve(args: list[str], port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [*CT, "serve", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def test_serves_mlflow_champion_not_the_stale_bundle(
    spec_file: Path,
    ct_home: Path,
    train_frame: pd.DataFrame,
    holdout: pd.DataFrame,
    tmp_path: Path,
) -> None:
    """The issue's example: v1 exported, then v2 promoted; `ct serve` served v1.

    It serves v2, the registry's champion, exporting it first; with the champion deleted
    it refuses, naming the stale version, instead of serving it.
    """
    from mlflow import MlflowClient

    from ct_platform.deployment.export import default_registry, export_champion_bundle
    from ct_platform.registry.mlflow_registry import default_tracking_uri
    from ct_platform.settings import load_spec
    from ct_platform_tests.deployment.conftest import register

    spec = load_spec(spec_file)
    registry = default_registry(spec)
    train, rows = train_frame.iloc[:3000], holdout.iloc[:500]
    first = register(registry, spec, train, rows, fingerprint="fp-1", tmp_path=tmp_path)
    set_champion(registry, first.version, spec)
    assert export_champion_bundle(spec, registry).name == f"bank_marketing-v{first.version}"
    second = register(registry, spec, train, rows, fingerprint="fp-2", tmp_path=tmp_path)
    set_champion(registry, second.version, spec)
    registry.set_tags(second.version, {"ct.semver": "1.1.0"})

    port = free_port()
    process = _serve([], port)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", timeout=300, process=process)
        metadata = httpx.get(f"http://127.0.0.1:{port}/v2/models/bank_marketing").json()
        assert metadata["versions"] == [str(second.version)]
        assert metadata["parameters"] == {"semantic_version": "1.1.0"}
    finally:
        _stop(process)
    assert (
        f"the local champion bundle is version {first.version}, MLflow's champion is "
        f"version {second.version}: exporting version {second.version}"
    ) in process.stderr.read()

    MlflowClient(default_tracking_uri()).delete_model_version("bank_marketing", second.version)
    refused = subprocess.run(
        [*CT, "serve", "--port", str(free_port())], capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 1
    assert (
        "MLflow has no version of model 'bank_marketing' with alias 'champion'; the local "
        f"champion bundle (version {second.version}) is stale: not serving it"
    ) in refused.stderr


def test_explicit_bundle_and_no_onnx(bundle_v2_dir: Path, spec_file: Path) -> None:
    port = free_port()
    process = _serve(["--bundle", str(bundle_v2_dir), "--no-onnx"], port)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", timeout=180, process=process)
        metadata = httpx.get(f"http://127.0.0.1:{port}/v2/models/bank_marketing").json()
        assert metadata["versions"] == ["2"] and metadata["platform"] == "scikit-learn"
    finally:
        _stop(process)


def test_without_champion_it_says_so(spec_file: Path) -> None:
    """No bundle and no MLflow champion: exit 1 naming the missing alias, no traceback."""
    result = subprocess.run(
        [*CT, "serve", "--port", str(free_port())], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert "champion" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_port_fails_in_one_line_before_any_url(bundle_dir: Path, spec_file: Path) -> None:
    """The newcomer's finding: `ct serve` printed its URL, then uvicorn's bind error. Now the
    port is bound first: one line naming it, exit 1, and the URL only once listening."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CT, "serve", "--bundle", str(bundle_dir), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 1
    assert result.stderr == (
        f"ct serve: cannot listen on 127.0.0.1:{port}: port {port} is already in use\n"
    )


def test_the_url_is_printed_once_listening(bundle_dir: Path, spec_file: Path) -> None:
    port = free_port()
    process = _serve(["--bundle", str(bundle_dir)], port)
    try:
        # Read until the announcement (library warnings may come first): by then the server
        # must already answer.
        line = process.stderr.readline()
        while line and not line.startswith("ct serve:"):
            line = process.stderr.readline()
        assert line == f"ct serve: {bundle_dir} on http://127.0.0.1:{port}\n"
        assert httpx.get(f"http://127.0.0.1:{port}/ping", timeout=30).status_code == 200
    finally:
        _stop(process)
