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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from ct_platform.cli import main
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


def test_sigterm_stops_the_command_cleanly(spec_file: Path, spec: Spec, source: Path) -> None:
    ct = Path(sys.executable).with_name("ct")  # the installed console script
    process = subprocess.Popen(
        [ct, "simulate", "--source", source, "--batch-size", "50", "--interval", "60"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    # Generous: on a busy 2-core box starting `ct` (pandas imports) alone can take a minute.
    deadline = time.monotonic() + 300
    while not (spec.landing_dir / "batch-00001.csv").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no batch landed within 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
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

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list]]:
    received: list = []
    handler = type("Handler", (_Recorder,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", received
    httpd.shutdown()
    httpd.server_close()


def test_traffic_sends_rows_then_delayed_labels(
    spec: Spec, source: Path, server: tuple[str, list], bank_frame: pd.DataFrame
) -> None:
    url, received = server
    options = ["--batch-size", "20", "--max-batches", "2", "--rps", "200", "--label-delay", "0.5"]
    assert _simulate(source, "--endpoint", url, "--api-key", "s3cret", *options) == 0

    invocations = [r for r in received if r[1] == "/invocations"]
    feedback = [r for r in received if r[1] == "/feedback"]
    assert len(invocations) == 40
    request_ids = [headers["X-Request-ID"] for _, _, headers, _ in invocations]
    assert len(set(request_ids)) == 40
    assert all(headers["Authorization"] == "Bearer s3cret" for _, _, headers, _ in invocations)
    first_body = invocations[0][3]["dataframe_split"]
    assert first_body["columns"] == spec.dataset.feature_columns  # no target, no dropped column
    assert first_body["data"] == [bank_frame.iloc[0][spec.dataset.feature_columns].tolist()]

    assert len(feedback) == 2  # one post per batch
    labels = [item for _, _, _, body in feedback for item in body]
    assert [item["request_id"] for item in labels] == request_ids
    assert [item["label"] for item in labels] == bank_frame["y"][:40].tolist()
    first_feedback_at = feedback[0][0]
    assert first_feedback_at - invocations[19][0] >= 0.4  # labels come late...
    assert first_feedback_at > invocations[20][0]  # ...without holding up the next batch
    assert _landed(spec) == ["batch-00001.csv", "batch-00002.csv"]


def test_endpoint_down_still_lands_batches(
    spec: Spec, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert (
        _simulate(
            source,
            "--endpoint",
            f"http://127.0.0.1:{port}",
            "--max-batches",
            "2",
            "--batch-size",
            "100",
        )
        == 0
    )
    assert _landed(spec) == ["batch-00001.csv", "batch-00002.csv"]
    output = capsys.readouterr().out
    assert output.count("unreachable") == 2  # once per batch, not once per row


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
