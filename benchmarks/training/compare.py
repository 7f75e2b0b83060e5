"""Training job vs a bare script: what orchestration and tracking cost.

In one run, alternating, each in its own process:
- the platform: `dagster job execute -m ct_platform.definitions -j training_job` on the bank
  data landed as the simulator lands it (4,000-row batches), with an MLflow store that
  already exists (creating one is a one-time set-up, reported separately);
- the bare script (`bare.py`): the same read, validate, fit, evaluate and save, by hand.

Prints the median wall time and peak RSS of each, and the overhead ratio.

    .venv/bin/python benchmarks/training/compare.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BANK_CSV = REPO_ROOT / "data" / "bank_marketing.csv.gz"
BIN = Path(sys.executable).parent
BATCH_ROWS = 4000


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process (`wait4` reports that child)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[0]} failed:\n{process.stderr.read()[-4000:]}")
    return elapsed, usage.ru_maxrss / 1024


def prepare_project(folder: Path) -> dict[str, str]:
    """A spec whose landing folder holds the whole dataset as batches; fresh CT/Dagster homes."""
    raw = yaml.safe_load((REPO_ROOT / "ct_platform.yaml").read_text())
    raw["dataset"]["landing_dir"] = "incoming"
    (folder / "incoming").mkdir(parents=True)
    frame = pd.read_csv(BANK_CSV, sep=";")
    for number, start in enumerate(range(0, len(frame), BATCH_ROWS), start=1):
        frame.iloc[start : start + BATCH_ROWS].to_csv(
            folder / "incoming" / f"batch-{number:05d}.csv", sep=";", index=False
        )
    spec_path = folder / "ct_platform.yaml"
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    (folder / "dagster").mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", folder / "dagster")
    return {
        **os.environ,
        "CT_SPEC": str(spec_path),
        "CT_HOME": str(folder / "ct"),
        "DAGSTER_HOME": str(folder / "dagster"),
    }


def create_store(env: dict[str, str]) -> float:
    script = (
        "from ct_platform.defs.resources import MlflowResource\n"
        "from ct_platform.settings import load_spec\n"
        "MlflowResource().registry(load_spec())\n"
    )
    return measure([str(BIN / "python"), "-c", script], env)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    job = [str(BIN / "dagster"), "job", "execute", "-m", "ct_platform.definitions"]
    job += ["-j", "training_job"]
    bare = [str(BIN / "python"), str(REPO_ROOT / "benchmarks" / "training" / "bare.py")]
    platform_runs, bare_runs, store_times = [], [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="ct-bench-") as folder:
            env = prepare_project(Path(folder))
            store_times.append(create_store(env))
            platform_runs.append(measure(job, env))
            bare_runs.append(measure([*bare, env["CT_SPEC"]], env))
    report(platform_runs, bare_runs, store_times)


def report(
    platform_runs: list[tuple[float, float]],
    bare_runs: list[tuple[float, float]],
    store_times: list[float],
) -> None:
    platform_s = statistics.median(t for t, _ in platform_runs)
    bare_s = statistics.median(t for t, _ in bare_runs)
    platform_mb = statistics.median(m for _, m in platform_runs)
    bare_mb = statistics.median(m for _, m in bare_runs)
    print(f"runs: {len(platform_runs)} of each (medians)")
    print(f"bare script          {bare_s:7.1f} s   peak RSS {bare_mb:6.0f} MiB")
    print(f"dagster training_job {platform_s:7.1f} s   peak RSS {platform_mb:6.0f} MiB")
    ratio = platform_s / bare_s
    print(f"ratio job/bare       {ratio:7.2f}x  (overhead {ratio - 1:.0%})")
    print(f"one-time MLflow store creation {statistics.median(store_times):.1f} s (not counted)")


if __name__ == "__main__":
    main()
