"""`ct status` (and every read-only command that lists registry versions) imports no model
library: a newcomer's `ct status` took 98 s on a loaded box, most of it importing
scikit-learn and skops through the registry module, which only logging and loading a model
need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Never needed to read the registry or the Dagster instance. (pandas and scipy.sparse are not
# listed: importing MLflow's client imports them, through `mlflow.models`.)
MODEL_LIBRARIES = ("sklearn", "skops", "evidently", "onnxruntime", "skl2onnx")
PROBE = """
import json, sys
from ct_platform.cli import main
code = main(["status", "--json"])
heavy = sorted({name.partition(".")[0] for name in sys.modules} & set(sys.argv[1].split(",")))
print(json.dumps({"exit": code, "heavy": heavy}), file=sys.stderr)
"""


def test_ct_status_imports_no_model_library(spec_file: Path, tmp_path: Path) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = {**os.environ, "CT_SPEC": str(spec_file), "DAGSTER_HOME": str(dagster_home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(MODEL_LIBRARIES)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout) == []  # nothing landed: an empty list
    report = json.loads(completed.stderr.strip().splitlines()[-1])
    assert report == {"exit": 0, "heavy": []}


def test_python_m_runs_the_cli() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ct_platform.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0 and completed.stdout.startswith("usage: ct ")
