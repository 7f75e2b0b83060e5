"""Loading the code location stays light: no heavy library is imported at definitions load.

Dagster's code server imports `ct_platform.definitions` at every start and reload; on a busy
machine each heavy library at module top added seconds, and the server timed out before it
was up (issue 8). Steps import what they need when they run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ct_platform_tests.conftest import REPO_ROOT

HEAVY = (
    "sklearn",
    "mlflow",
    "evidently",
    "skops",
    "onnxruntime",
    "onnx",
    "skl2onnx",
    "scipy",
    "pandas",
    "pyarrow",
)

# Runs in a fresh interpreter: records, for each heavy package's first import, the chain of
# ct_platform modules that led to it, then imports the code location.
PROBE = """
import importlib.abc, json, sys, traceback
heavy = set(sys.argv[1].split(","))
chains = {}

class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in heavy and top not in chains:
            frames = traceback.extract_stack()[:-1]
            chains[top] = [
                f"{f.filename.split('ct_platform', 1)[-1]}:{f.lineno}"
                for f in frames
                if "/ct_platform/" in f.filename
            ]
        return None  # only watching: the normal finders do the import

sys.meta_path.insert(0, Recorder())
import ct_platform.definitions  # noqa: F401
loaded = {top: chains.get(top, []) for top in heavy if top in sys.modules}
print(json.dumps(loaded))
"""


def test_definitions_load_imports_no_heavy_library(tmp_path: Path) -> None:
    env = os.environ | {"CT_HOME": str(tmp_path / "ct_home")}
    env.pop("CT_SPEC", None)  # the shipped spec, as the code server loads it
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    chains = "\n".join(f"{top}: imported via {' -> '.join(chain)}" for top, chain in loaded.items())
    assert loaded == {}, f"heavy modules imported at definitions load:\n{chains}"
