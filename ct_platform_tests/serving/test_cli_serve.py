"""`ct serve`: explicit bundle, the champion's bundle by default, a clear error without one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

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


def test_serves_the_champion_bundle_by_default(
    bundle_dir: Path, ct_home: Path, spec_file: Path
) -> None:
    """The champion pointer under CT_HOME/bundles decides what `ct serve` serves."""
    bundles = ct_home / "bundles"
    bundles.mkdir(parents=True)
    (bundles / "champion.json").write_text(json.dumps({"bundle": str(bundle_dir)}))
    port = free_port()
    process = _serve([], port)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", timeout=180, process=process)
        metadata = httpx.get(f"http://127.0.0.1:{port}/v2/models/bank_marketing").json()
        assert metadata["versions"] == ["1"]
    finally:
        _stop(process)


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
