"""The server runs where pandas, mlflow, dagster, evidently, pydantic and skl2onnx are absent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ABSENT = ("pandas", "mlflow", "dagster", "evidently", "pydantic", "yaml", "skl2onnx")

SCRIPT = """
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    # As in the slim image: these packages are simply not installed.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {absent!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None

sys.meta_path.insert(0, Absent())

from pathlib import Path

import numpy as np

from ct_platform.serving.app import create_app
from ct_platform.serving.bundle import load_bundle
from ct_platform.serving.config import ServerConfig
from ct_platform.serving.schema import ParsedRows

create_app(ServerConfig(bundle=Path({bundle!r}), home=Path({home!r})))
for use_onnx in (True, False):
    model = load_bundle({bundle!r}, use_onnx=use_onnx)
    numeric = np.array([[40.0] for c in model.meta.columns if c.is_numeric])
    blocks = iter(numeric)
    columns = [
        next(blocks) if c.is_numeric else np.array([c.categories[0]], dtype=object)
        for c in model.meta.columns
    ]
    rows = ParsedRows(n_rows=1, columns=columns, numeric=numeric)
    print(model.backend_name, model.predict(rows).labels.tolist())
"""


def test_server_needs_none_of_the_platform_heavyweights(bundle_dir: Path, tmp_path: Path) -> None:
    script = SCRIPT.format(absent=ABSENT, bundle=str(bundle_dir), home=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    onnx_line, sklearn_line = result.stdout.splitlines()[:2]
    assert onnx_line.startswith("onnx [") and sklearn_line.startswith("sklearn [")
    assert onnx_line.removeprefix("onnx ") == sklearn_line.removeprefix("sklearn ")
