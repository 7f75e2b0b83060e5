"""Serving fixtures: one fitted bank pipeline, its bundles, and real servers on free ports.

Servers run the real app under uvicorn, in a thread of the test process (fast to start:
nothing to re-import) or, where the command line itself is under test, in a subprocess.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
import uvicorn
import yaml
from sklearn.pipeline import Pipeline

from ct_platform.data.contract import check_contract
from ct_platform.monitoring.prediction_log import prediction_records
from ct_platform.serving.__main__ import uvicorn_config
from ct_platform.serving.app import create_app
from ct_platform.serving.bundle import ONNX_FILE, SKOPS_FILE, OnnxInfo, read_meta, write_bundle
from ct_platform.serving.config import ServerConfig
from ct_platform.serving.schema import ParsedRows
from ct_platform.settings import Spec, load_spec
from ct_platform.training.bundling import build_bundle
from ct_platform.training.fit import fit_pipeline
from ct_platform_tests.conftest import BANK_SPEC

TRAIN_ROWS = 10_000
HOLDOUT_ROWS = 2_000
MODEL_NAME = "bank_marketing"


def parsed_rows(frame: pd.DataFrame, spec: Spec) -> ParsedRows:
    """The spec's feature columns as the server parses them: float64 (NaN: missing) for
    numeric columns, views into one (n_numeric, n_rows) block; object arrays of str else."""
    features = spec.dataset.feature_columns
    numeric = [name for name in features if spec.dataset.columns[name].is_numeric]
    block = frame[numeric].to_numpy(dtype=np.float64).T.copy()
    rows_of = {name: block[i] for i, name in enumerate(numeric)}
    columns = [rows_of.get(name, frame[name].to_numpy(dtype=object)) for name in features]
    return ParsedRows(n_rows=len(frame), columns=columns, numeric=block)


@pytest.fixture(scope="session")
def bank_spec() -> Spec:
    return load_spec(BANK_SPEC)


@pytest.fixture(scope="session")
def clean_bank(bank_frame: pd.DataFrame, bank_spec: Spec) -> pd.DataFrame:
    """The first rows of the demo data as the data contract cleans them (sentinels -> NaN)."""
    result = check_contract(bank_frame.iloc[: TRAIN_ROWS + HOLDOUT_ROWS], bank_spec.dataset)
    assert result.passed, result.failed
    return result.clean


@pytest.fixture(scope="session")
def train_frame(clean_bank: pd.DataFrame) -> pd.DataFrame:
    return clean_bank.iloc[:TRAIN_ROWS]


@pytest.fixture(scope="session")
def holdout(clean_bank: pd.DataFrame) -> pd.DataFrame:
    return clean_bank.iloc[TRAIN_ROWS:].reset_index(drop=True)


@pytest.fixture(scope="session")
def fitted_pipeline(train_frame: pd.DataFrame, bank_spec: Spec) -> Pipeline:
    return fit_pipeline(train_frame, bank_spec)


@pytest.fixture(scope="session")
def bundle_dir(
    fitted_pipeline: Pipeline, bank_spec: Spec, holdout: pd.DataFrame, tmp_path_factory
) -> Path:
    return build_bundle(
        fitted_pipeline,
        bank_spec,
        name=MODEL_NAME,
        version=1,
        fingerprint="fp-v1",
        holdout=holdout,
        directory=tmp_path_factory.mktemp("bundles") / f"{MODEL_NAME}-v1",
    )


def copy_bundle(source: Path, target: Path, **changes: object) -> Path:
    """A copy of a bundle with some bundle.json fields changed (e.g. version)."""
    shutil.copytree(source, target)
    meta = dataclasses.replace(read_meta(source), **changes)
    onnx_path = target / ONNX_FILE
    onnx_bytes = onnx_path.read_bytes() if meta.onnx.enabled else None
    write_bundle(
        target,
        meta=meta,
        pipeline_skops_bytes=(target / SKOPS_FILE).read_bytes(),
        onnx_bytes=onnx_bytes,
    )
    return target


@pytest.fixture(scope="session")
def bundle_v2_dir(bundle_dir: Path, tmp_path_factory) -> Path:
    """The same model under version 2: tells slots apart in swap and routing tests."""
    return copy_bundle(bundle_dir, tmp_path_factory.mktemp("bundles") / "v2", version="2")


@pytest.fixture(scope="session")
def sklearn_only_bundle(bundle_dir: Path, tmp_path_factory) -> Path:
    """The same model with ONNX switched off, as when conversion or parity fails."""
    return copy_bundle(
        bundle_dir,
        tmp_path_factory.mktemp("bundles") / "sklearn-only",
        onnx=OnnxInfo(enabled=False, reason="disabled for the fallback test"),
    )


@pytest.fixture(scope="session")
def other_model_bundle(
    train_frame: pd.DataFrame, bank_spec: Spec, holdout: pd.DataFrame, tmp_path_factory
) -> Path:
    """A genuinely different model (fitted on fewer rows) as version 3: its own model.onnx."""
    return build_bundle(
        fit_pipeline(train_frame.iloc[:3000], bank_spec),
        bank_spec,
        name=MODEL_NAME,
        version=3,
        fingerprint="fp-v3",
        holdout=holdout,
        directory=tmp_path_factory.mktemp("bundles") / f"{MODEL_NAME}-v3",
    )


# --- payloads ------------------------------------------------------------------------------


def raw_rows(holdout: pd.DataFrame, spec: Spec, n: int, start: int = 0) -> list[dict]:
    """Rows as a client would send them: JSON types, missing values as null."""
    features = holdout[spec.dataset.feature_columns].iloc[start : start + n]
    return orjson.loads(features.to_json(orient="records"))


def split_payload(rows: list[dict]) -> dict:
    columns = list(rows[0])
    return {
        "dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}
    }


def expected_labels(
    pipeline: Pipeline, holdout: pd.DataFrame, spec: Spec, n: int, start: int = 0
) -> list:
    features = holdout[spec.dataset.feature_columns].iloc[start : start + n]
    return pipeline.predict(features).tolist()


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class ThreadedServer:
    """The real app under uvicorn in a background thread (one event loop, like production)."""

    def __init__(self, config: ServerConfig, env: dict[str, str] | None = None) -> None:
        with pytest.MonkeyPatch.context() as patch:
            # Secrets are read from the environment when the app is created.
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            app = create_app(config)
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The production settings (uvloop, httptools with header limits), on a free port.
        self._server = uvicorn.Server(uvicorn_config(app, config, host="127.0.0.1", port=self.port))
        self._thread = threading.Thread(target=self._server.run, name="test-server", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        wait_until_up(f"{self.url}/ping", timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def season_bundle(
    folder: Path,
    target_rules: dict[str, float] | None = None,
    *,
    version: int = 1,
    classes: tuple[str, str, str] | None = None,
) -> Path:
    """A real regression bundle (`seasons` v`version`, in `folder/home/bundles`) whose
    category `season` is coded "1".."4" in its data; `target_rules` as the spec would
    declare them. With `classes` (coldest first), a classifier on the same columns instead:
    the temperature's tertile, named by them."""
    raw = yaml.safe_load(BANK_SPEC.read_text())
    raw["dataset"] = {
        "name": "seasons",
        "landing_dir": str(folder),
        "target": "y",
        "task": "classification" if classes else "regression",
        "columns": {
            "season": {"type": "category", "categories": ["1", "2", "3", "4"]},
            "temp": {"type": "float"},
        },
        **({"target_rules": target_rules} if target_rules else {}),
    }
    raw["evaluation"]["primary_metric"] = "accuracy" if classes else "rmse"
    kind = "Classifier" if classes else "Regressor"
    raw["model"] = {
        "name": "seasons",
        "estimator": f"sklearn.ensemble.HistGradientBoosting{kind}",
        "params": {"max_iter": 30, "random_state": 0},
    }
    (folder / f"spec-v{version}.yaml").write_text(yaml.safe_dump(raw))
    spec = load_spec(folder / f"spec-v{version}.yaml")
    rng = np.random.default_rng(0)
    season = rng.integers(1, 5, 2000)
    temp = rng.normal(15, 8, 2000)
    target = (
        np.array(classes)[np.digitize(temp, np.quantile(temp, [1 / 3, 2 / 3]))]
        if classes
        else season * 10.0 + temp
    )
    frame = pd.DataFrame({"season": season.astype(str), "temp": temp, "y": target})
    return build_bundle(
        fit_pipeline(frame.iloc[:1500], spec),
        spec,
        name="seasons",
        version=version,
        fingerprint=f"fp-seasons-{version}",
        holdout=frame.iloc[1500:].reset_index(drop=True),
        directory=folder / "home" / "bundles" / f"seasons-v{version}",
    )


def server_config(bundle: Path, home: Path, **overrides: object) -> ServerConfig:
    return ServerConfig(bundle=bundle, home=home, **overrides)


@pytest.fixture(scope="session")
def open_server(bundle_dir: Path, tmp_path_factory) -> Iterator[ThreadedServer]:
    """No API key, no admin token: protocol, bad-input and prediction-log tests."""
    home = tmp_path_factory.mktemp("open_server_home")
    with ThreadedServer(server_config(bundle_dir, home)) as server:
        yield server


def run_module_server(
    args: list[str], env: dict[str, str], log: Path, attempts: int = 3
) -> tuple[subprocess.Popen, str]:
    """`python -m ct_platform.serving ...` as a subprocess, once it answers /ping.

    Retried on a fresh port if it exits early: on a shared machine another process can take
    the free port between our probe and the server's bind.
    """
    for _ in range(attempts):
        port = free_port()
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "ct_platform.serving", *args, "--port", str(port)],
                env={**os.environ, **env},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/ping", timeout=180, process=process)
            return process, f"http://127.0.0.1:{port}"
        except RuntimeError:  # exited early: try another port
            process.wait()
        except TimeoutError:
            process.kill()
            process.wait()
            break
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the server did not come up; its output:\n{tail}")


def read_log_records(directory: Path) -> list[dict]:
    """Every record of the JSONL files in `directory`; a prediction-log batch record (a
    multi-row request) as its row records, expanded by the platform's own reader."""
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line) if line else None
            if isinstance(record, dict) and "rows" in record:
                records.extend(prediction_records(line))
            elif record is not None:
                records.append(record)
    return records


def wait_for_records(directory: Path, request_ids: set[str], timeout: float = 120.0) -> list[dict]:
    """Records whose request id (before any `:row` suffix) is in `request_ids`, once all are in."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            r for r in read_log_records(directory) if r["request_id"].split(":")[0] in request_ids
        ]
        seen = {r["request_id"].split(":")[0] for r in found}
        if seen >= request_ids or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
