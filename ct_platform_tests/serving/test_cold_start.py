"""Cold start: on an ONNX bundle the server never imports scikit-learn, skops, scipy or pandas.

Structural, not timed: the real entry point (`python -m ct_platform.serving`'s `main`) runs
in a fresh interpreter, answers a real scoring request over HTTP, and that interpreter then
reports which of the heavy libraries it has imported. The sklearn fallback (a bundle without
a graph) is the one path allowed to load them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pandas as pd

from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import free_port, raw_rows, split_payload

HEAVY = ("sklearn", "skops", "scipy", "pandas", "mlflow", "dagster", "evidently")

# Serves with the real `main`, POSTs one row from a thread once /ping answers, then prints
# the status and the heavy top-level packages in sys.modules, and exits.
_PROBE = """
import json, sys, threading, time, urllib.request, os
from ct_platform.serving.__main__ import main

bundle, port, body, heavy = sys.argv[1], sys.argv[2], sys.argv[3].encode(), sys.argv[4:]
base = f"http://127.0.0.1:{port}"

def probe():
    deadline = time.monotonic() + 600  # a loaded shared box can take minutes to import
    while True:
        try:
            urllib.request.urlopen(base + "/ping", timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                os._exit(3)
            time.sleep(0.05)
    request = urllib.request.Request(
        base + "/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = {"status": response.status, "body": json.loads(response.read())}
    answer["imported"] = sorted(name for name in heavy if name in sys.modules)
    print(json.dumps(answer), flush=True)
    os._exit(0)

threading.Thread(target=probe, daemon=True).start()
main(["--bundle", bundle, "--port", port])
"""


def _serve_one_request(bundle: Path, body: bytes, home: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, str(bundle), str(free_port()), body.decode(), *HEAVY],
        capture_output=True,
        text=True,
        timeout=800,
        env={"CT_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_onnx_bundle_serves_without_sklearn_skops_scipy_or_pandas(
    bundle_dir: Path, holdout: pd.DataFrame, bank_spec: Spec, tmp_path: Path
) -> None:
    body = orjson.dumps(split_payload(raw_rows(holdout, bank_spec, 1)))
    onnx = _serve_one_request(bundle_dir, body, tmp_path)
    assert onnx["status"] == 200 and len(onnx["body"]["predictions"]) == 1
    assert onnx["imported"] == []


def test_sklearn_fallback_loads_them(
    sklearn_only_bundle: Path, holdout: pd.DataFrame, bank_spec: Spec, tmp_path: Path
) -> None:
    """The probe does see imports when they happen: the fallback needs sklearn and skops."""
    body = orjson.dumps(split_payload(raw_rows(holdout, bank_spec, 1)))
    fallback = _serve_one_request(sklearn_only_bundle, body, tmp_path)
    assert fallback["status"] == 200 and len(fallback["body"]["predictions"]) == 1
    assert {"sklearn", "skops"} <= set(fallback["imported"])
