from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ct_platform.cli import main
from ct_platform.data.ingest import ingest_batch
from ct_platform.data.landing import LandingCursor, scan_landing
from ct_platform.data.replay import ReplayOptions, replay
from ct_platform.settings import Paths, Spec

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def source(tmp_path: Path, bank_frame: pd.DataFrame) -> Path:
    """250 raw rows of the demo data, as a gzipped source file to replay."""
    path = tmp_path / "source.csv.gz"
    bank_frame.iloc[:250].to_csv(path, sep=";", index=False)
    return path


def _simulate(source: Path, *options: str) -> int:
    return main(["simulate", "--source", str(source), "--interval", "0", *options])


def _free_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on (until a test serves it)
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_ct_simulate(source: Path, *options: str) -> subprocess.Popen[str]:
    ct = Path(sys.executable).with_name("ct")  # the installed console script
    return subprocess.Popen(
        [ct, "simulate", "--source", source, "--interval", "0", *options],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )


def _read_until(process: subprocess.Popen[str], text: str) -> str:
    """stdout up to and including the first line containing `text` (fails if it exits first)."""
    seen = ""
    for line in process.stdout:
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"ct simulate ended without printing {text!r}; it printed:\n{seen}")


def _landed(spec: Spec) -> list[str]:
    return sorted(p.name for p in spec.landing_dir.iterdir())


def _rows(spec: Spec, name: str) -> pd.DataFrame:
    return pd.read_csv(spec.landing_dir / name, sep=";")


def test_lands_batches_in_order_and_resumes(
    spec: Spec, source: Path, bank_frame: pd.DataFrame
) -> None:
    assert _simulate(source, "--batch-size", "100", "--max-batches", "2") == 0
    assert _landed(spec) == ["batch-00001.csv", "batch-00002.csv"]
    pd.testing.assert_frame_equal(
        _rows(spec, "batch-00002.csv"), bank_frame.iloc[100:200].reset_index(drop=True)
    )
    state = json.loads((Paths.from_env().state / "simulate.json").read_text())
    assert state["next_row"] == 200

    assert _simulate(source, "--batch-size", "100", "--once") == 0  # a restart continues
    assert _rows(spec, "batch-00003.csv")["age"].tolist() == bank_frame["age"][200:250].tolist()


def test_stops_when_the_source_is_exhausted(
    spec: Spec, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _simulate(source, "--batch-size", "100") == 0
    assert _landed(spec) == ["batch-00001.csv", "batch-00002.csv", "batch-00003.csv"]
    assert "source exhausted: all 250 rows" in capsys.readouterr().out


def test_restart_replays_the_same_rows_under_new_names(spec: Spec, source: Path) -> None:
    _simulate(source, "--batch-size", "100", "--once")
    _simulate(source, "--batch-size", "100", "--once", "--restart")
    assert _landed(spec) == ["batch-00001.csv", "batch-00002.csv"]
    scan = scan_landing(spec.landing_dir, LandingCursor(), now=time.time() + 60)
    # Same bytes as the first batch: the platform sees a duplicate, not new data to train on.
    assert [f.path.name for f in scan.new] == ["batch-00001.csv"]
    assert [f.path.name for f in scan.duplicates] == ["batch-00002.csv"]


def test_bad_source_is_reported(tmp_path: Path, spec: Spec) -> None:
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(os.urandom(512))
    assert _simulate(garbage, "--once") == 1
    assert _landed(spec) == []


def test_a_missing_source_names_the_path_tried_and_how_to_give_one(
    spec_file: Path, spec: Spec, capsys: pytest.CaptureFixture[str]
) -> None:
    # A regression project's spec names no dataset.source: no bank rows by default.
    raw = yaml.safe_load(spec_file.read_text())
    del raw["dataset"]["source"]
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["simulate", "--once"]) == 2
    said = capsys.readouterr().out
    assert said == (
        "ct simulate: no dataset file to replay: give the file with --source FILE, or set "
        f"dataset.source in {spec_file}\n"
    )
    # dataset.source names a file that is not there: the full path tried, and where it came from.
    raw["dataset"]["source"] = "data/sales.csv"
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["simulate", "--once"]) == 2
    tried = spec_file.parent / "data" / "sales.csv"
    assert capsys.readouterr().out == (
        f"ct simulate: dataset file {tried} (from dataset.source of {spec_file}) does not "
        f"exist: give the file with --source FILE, or set dataset.source in {spec_file}\n"
    )
    assert main(["simulate", "--once", "--source", "nowhere.csv"]) == 2
    assert f"dataset file {Path('nowhere.csv').resolve()} (from --source) does not exist" in (
        capsys.readouterr().out
    )
    assert _landed(spec) == []


def test_the_spec_names_the_source_to_replay(
    spec_file: Path, spec: Spec, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(spec_file.read_text())
    raw["dataset"]["source"] = source.name  # relative to the spec's folder
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["simulate", "--once", "--batch-size", "100", "--interval", "0"]) == 0
    assert _landed(spec) == ["batch-00001.csv"]


def test_stop_event_ends_the_wait_between_batches(spec: Spec, source: Path) -> None:
    options = ReplayOptions(
        source=source,
        landing_dir=spec.landing_dir,
        state_path=Paths.from_env().state / "simulate.json",
        batch_size=50,
        interval=3600,
    )
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    assert replay(options, spec, stop, log=lambda _: None) == 1
    # Far below the hour-long interval, and far above what a busy box needs to land a batch.
    assert time.monotonic() - started < 300


def test_sigterm_stops_the_command_cleanly(spec: Spec, source: Path) -> None:
    process = _start_ct_simulate(source, "--batch-size", "50", "--interval", "60")
    try:
        _read_until(process, "landed batch-00001.csv")  # no clock: a busy box starts slowly
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "stopped: 1 batches landed" in output
    assert _landed(spec) == ["batch-00001.csv"]  # no half-written or temporary file left


# --- live traffic against a real local HTTP server -----------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[float, str, dict[str, str], object]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((time.monotonic(), self.path, dict(self.headers), body))
        payload = b'{"predictions": [0]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # /ping of the model server, /server_info of Dagster
        self.received.append((time.monotonic(), self.path, dict(self.headers), None))
        self.send_response(200)
        self.send_header("Content-Length", "1")
        self.end_headers()
        self.wfile.write(b"\n")

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@contextmanager
def _serving(port: int = 0) -> Iterator[tuple[str, list]]:
    """A real HTTP server on `port` (0: any free one) that records every request."""
    received: list = []
    handler = type("Handler", (_Recorder,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", received
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[tuple[str, list]]:
    with _serving() as served:
        yield served


def test_traffic_sends_rows_then_delayed_labels(
    spec: Spec, source: Path, server: tuple[str, list], bank_frame: pd.DataFrame
) -> None:
    url, received = server
    options = ["--batch-size", "20", "--max-batches", "2", "--rps", "200", "--label-delay", "0.5"]
    traffic = ["--traffic-rows", "40"]
    assert _simulate(source, "--endpoint", url, "--api-key", "s3cret", *options, *traffic) == 0

    invocations = [r for r in received if r[1] == "/invocations"]
    feedback = [r for r in received if r[1] == "/feedback"]
    assert len(invocations) == 40
    request_ids = [headers["X-Request-ID"] for _, _, headers, _ in invocations]
    assert len(set(request_ids)) == 40
    assert all(headers["Authorization"] == "Bearer s3cret" for _, _, headers, _ in invocations)
    first_body = invocations[0][3]["dataframe_split"]
    assert first_body["columns"] == spec.dataset.feature_columns  # no target, no dropped column
    assert first_body["data"] == [bank_frame.iloc[0][spec.dataset.feature_columns].tolist()]

    labels = [item for _, _, _, body in feedback for item in body]
    assert [item["request_id"] for item in labels] == request_ids
    assert [item["label"] for item in labels] == bank_frame["y"][:40].tolist()
    assert feedback[0][0] - invocations[-1][0] >= 0.4  # labels come late
    assert _landed(spec) == ["batch-00001.csv", "batch-00002.csv"]


def test_traffic_starts_when_the_endpoint_answers_and_outlasts_the_landing(
    spec: Spec, source: Path
) -> None:
    port = _free_port()
    process = _start_ct_simulate(
        source, "--batch-size", "100", "--endpoint", f"http://127.0.0.1:{port}", "--rps", "200"
    )
    try:
        # The endpoint is down: batches still land, and the wait is said once, not per row.
        output = _read_until(process, "goes on; Ctrl-C stops it")
        assert "source exhausted" in output
        assert _landed(spec) == ["batch-00001.csv", "batch-00002.csv", "batch-00003.csv"]
        if "waiting for model endpoint" not in output:  # the traffic thread may say it later
            _read_until(process, "waiting for model endpoint")
        with _serving(port) as (_, received):  # the model is served, later
            assert "waiting for" not in _read_until(process, "model endpoint is up")
            deadline = time.monotonic() + 60
            while not any(r[1] == "/invocations" for r in received):
                assert time.monotonic() < deadline, "no request within 60 s of the endpoint"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            rest, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "stopped: 3 batches landed" in rest


def test_wait_for_lands_nothing_until_the_platform_answers(spec: Spec, source: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/server_info"
    process = _start_ct_simulate(source, "--batch-size", "100", "--once", "--wait-for", url)
    try:
        _read_until(process, f"waiting for the platform at {url}")
        assert _landed(spec) == []
        with _serving(port) as (_, received):
            output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0
    assert [r[1] for r in received][:1] == ["/server_info"]
    assert "the platform is up" in output
    assert _landed(spec) == ["batch-00001.csv"]


def _paced(spec: Spec, source: Path, max_wait: float) -> ReplayOptions:
    return ReplayOptions(
        source=source,
        landing_dir=spec.landing_dir,
        state_path=Paths.from_env().state / "simulate.json",
        batch_size=100,
        interval=0,
        max_batches=2,
        max_pending=0,
        max_wait=max_wait,
    )


def test_next_batch_waits_until_the_platform_ingested_the_last(spec: Spec, source: Path) -> None:
    said: list[str] = []
    waiting = threading.Event()

    def log(line: str) -> None:
        said.append(line)
        if line.startswith("waiting for the platform to ingest"):
            waiting.set()

    landed: list[int] = []
    worker = threading.Thread(
        target=lambda: landed.append(
            replay(_paced(spec, source, max_wait=600), spec, threading.Event(), log=log)
        )
    )
    worker.start()
    assert waiting.wait(60), said
    assert _landed(spec) == ["batch-00001.csv"]  # held back: batch 1 is not ingested yet
    assert "batch-00001.csv" in said[-1]
    # The platform's own ingestion (validated or quarantined) releases the next batch.
    ingest_batch("batch-00001.csv", spec, Paths.from_env())
    worker.join(60)
    assert landed == [2]
    assert "batch-00002.csv" in _landed(spec)


def test_a_platform_that_never_ingests_does_not_stall_the_replay(spec: Spec, source: Path) -> None:
    said: list[str] = []
    assert replay(_paced(spec, source, max_wait=0), spec, threading.Event(), log=said.append) == 2
    assert any("landing the next batch anyway: 1 batch(es) still not ingested" in s for s in said)
    assert _landed(spec) == ["batch-00001.csv", "batch-00002.csv"]


def test_corrupt_state_asks_for_restart(
    spec: Spec, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (Paths.from_env().state / "simulate.json").write_text("{not json")
    assert _simulate(source, "--once") == 1
    assert "not a valid simulation state" in capsys.readouterr().out
    assert _simulate(source, "--once", "--restart") == 0
    assert _landed(spec) == ["batch-00001.csv"]


def test_invalid_rates_are_rejected(
    spec: Spec, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _simulate(source, "--once", "--endpoint", "http://127.0.0.1:9", "--rps", "0") == 1
    assert _simulate(source, "--once", "--batch-size", "0") == 1
    output = capsys.readouterr().out
    assert "--rps must be positive" in output
    assert "--batch-size must be at least 1" in output
    assert _landed(spec) == []
