"""Training job vs a bare script: what orchestration and tracking cost.

In one run, alternating (which goes first flips each repeat), each in its own process on its
own fresh project (CT_HOME, DAGSTER_HOME) over the same landed files:
- the platform: `dagster job execute -m ct_platform.definitions -j training_job`, with an
  MLflow store and a Dagster instance storage (runs, event-log index, schedules) that
  already exist, as they do from a project's second run on (creating them is a one-time
  set-up, reported apart);
- the bare script (`bare.py`): the same ingest, fits, gates, reports, card and bundle by hand,
  calling the same domain functions, without Dagster and MLflow.

Prints the median wall time, peak RSS and CPU seconds (user + system) of each, the ratios,
and a breakdown by phase: the job's from its own event log (process start -> run created:
import and code location load; -> first step: run set-up; each step; -> process exit:
teardown), the script's from its own timer. Python's and Dagster's start-up alone (`import
dagster`, `import ct_platform.definitions`) are measured apart, each in a fresh process.

Cases:
- `bank`: the bank data (41,188 rows) landed as the simulator lands it, 4,000-row batches
  (11, the last of 1,188 rows); the spec's window (the newest 10 batches, 37,188 rows).
- `1m`: a 1,000,000-row history, 250 batches of 4,000 rows, all in the window. Rows are
  drawn with replacement from the bank data (seeded) in time order of the draw, numeric
  columns jittered by Gaussian noise of 5 % of their standard deviation (rounded for
  integer columns, clipped to the spec's range; the pdays=999 sentinel kept as is) so the
  rows are not mere copies; categories and the target are resampled as they are.

    nice .venv/bin/python benchmarks/training/compare.py [--case bank|1m] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BANK_CSV = REPO_ROOT / "data" / "bank_marketing.csv.gz"
BIN = Path(sys.executable).parent
BATCH_ROWS = 4000
MILLION = 1_000_000
NOISE_SHARE = 0.05
JOB = [str(BIN / "dagster"), "job", "execute", "-m", "ct_platform.definitions"]
JOB += ["-j", "training_job"]
BARE = [str(BIN / "python"), str(REPO_ROOT / "benchmarks" / "training" / "bare.py")]
STEP_ENDS = {"STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"}


@dataclass
class Measured:
    wall_s: float
    peak_rss_mb: float
    # User + system seconds of the process and the children it waited for: what the work
    # took of the CPU, which the other sessions' load moves far less than wall time.
    cpu_s: float
    phases: dict[str, float] = field(default_factory=dict)


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float, float, float, str]:
    """Start time (epoch s), wall seconds, peak RSS (MiB; `wait4` reports that child), CPU
    seconds (user + system) and stdout of one child process; SystemExit with its stderr if
    it fails."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started_at, started = time.time(), time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{command[:3]} failed:\n{err.read()[-4000:]}")
        cpu = usage.ru_utime + usage.ru_stime
        return started_at, elapsed, usage.ru_maxrss / 1024, cpu, out.read()


def history(case: str) -> pd.DataFrame:
    """The landed rows of `case`, oldest first (see the module docstring)."""
    frame = pd.read_csv(BANK_CSV, sep=";")
    if case == "bank":
        return frame
    spec = yaml.safe_load((REPO_ROOT / "ct_platform.yaml").read_text())["dataset"]
    rng = np.random.default_rng(12)
    rows = frame.iloc[np.sort(rng.integers(0, len(frame), MILLION))].reset_index(drop=True)
    for name, column in spec["columns"].items():
        if column["type"] not in ("int", "float"):
            continue
        values = rows[name].astype("float64")
        noisy = values + rng.normal(0, NOISE_SHARE * values.std(), len(values))
        noisy = noisy.clip(column.get("min"), column.get("max"))
        if column["type"] == "int":
            noisy = noisy.round()
        sentinel = values.isin(column.get("sentinels", []))
        rows[name] = noisy.where(~sentinel, values).astype(rows[name].dtype)
    return rows


def prepare_landing(folder: Path, case: str) -> tuple[Path, int]:
    """The case's rows as 4,000-row batch files and its spec; (spec path, batches)."""
    raw = yaml.safe_load((REPO_ROOT / "ct_platform.yaml").read_text())
    raw["dataset"]["landing_dir"] = "incoming"
    (folder / "incoming").mkdir(parents=True)
    frame = history(case)
    starts = range(0, len(frame), BATCH_ROWS)
    for number, start in enumerate(starts, start=1):
        frame.iloc[start : start + BATCH_ROWS].to_csv(
            folder / "incoming" / f"batch-{number:05d}.csv", sep=";", index=False
        )
    if case != "bank":
        raw["evaluation"]["window_batches"] = len(starts)
    spec_path = folder / "ct_platform.yaml"
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec_path, len(starts)


def fresh_project(folder: Path, spec_path: Path, name: str) -> dict[str, str]:
    home = folder / name
    (home / "dagster").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster")
    return {
        **os.environ,
        # Both sides run this checkout's code: without it the venv's editable install (the
        # main checkout) serves the script, and the job whatever the working directory holds.
        "PYTHONPATH": str(REPO_ROOT),
        "CT_SPEC": str(spec_path),
        "CT_HOME": str(home / "ct"),
        "DAGSTER_HOME": str(home / "dagster"),
    }


def create_stores(env: dict[str, str]) -> dict[str, float]:
    """Create the project's MLflow store and Dagster instance storage, each in a fresh
    process: wall seconds of each (a one-time set-up, not counted in the job's time)."""
    mlflow_store = (
        "from ct_platform.defs.resources import MlflowResource\n"
        "from ct_platform.settings import load_spec\n"
        "MlflowResource().registry(load_spec())\n"
    )
    # runs.db, schedules.db and the event log's cross-run index (history/runs/index.db).
    dagster_storage = (
        "from dagster import DagsterInstance\n"
        "with DagsterInstance.get() as instance:\n"
        "    instance.get_runs(limit=1)\n"
        "    instance.get_asset_keys()\n"
    )
    python = str(BIN / "python")
    return {
        "MLflow store": measure([python, "-c", mlflow_store], env)[1],
        "Dagster instance storage": measure([python, "-c", dagster_storage], env)[1],
    }


def run_job(env: dict[str, str]) -> Measured:
    started_at, wall, rss, cpu, _ = measure(JOB, env)
    return Measured(wall, rss, cpu, job_phases(Path(env["DAGSTER_HOME"]), started_at, wall))


def job_phases(dagster_home: Path, started_at: float, wall: float) -> dict[str, float]:
    """Seconds per phase of the one run in `dagster_home`, from its event log."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home))) as instance:
        (record,) = instance.get_run_records()
        entries = instance.all_logs(record.dagster_run.run_id)
    created = record.create_timestamp.timestamp()
    starts, ends = {}, {}
    for entry in entries:
        kind = entry.dagster_event.event_type_value if entry.dagster_event else None
        if kind == "STEP_START":
            starts[entry.step_key] = entry.timestamp
        elif kind in STEP_ENDS:
            ends[entry.step_key] = entry.timestamp
    first_step = min(starts.values())
    last_end = max(ends.values())
    phases = {
        "import_and_load": created - started_at,
        "run_setup": first_step - created,
    }
    for key in sorted(starts, key=starts.get):
        phases[f"step:{key}"] = ends.get(key, last_end) - starts[key]
    steps = sum(v for k, v in phases.items() if k.startswith("step:"))
    phases["between_steps"] = (last_end - first_step) - steps
    phases["teardown"] = started_at + wall - last_end
    return phases


def run_bare(env: dict[str, str], spec_path: Path) -> Measured:
    started_at, wall, rss, cpu, out = measure([*BARE, str(spec_path)], env)
    report = json.loads(out.strip().splitlines()[-1])
    phases = {"import": report["imported"] - started_at}
    phases.update({f"step:{k}": v for k, v in report["phases"].items()})
    phases["other"] = wall - sum(phases.values())
    return Measured(wall, rss, cpu, phases)


def startup(env: dict[str, str]) -> dict[str, float]:
    """Wall seconds of a fresh Python importing Dagster, and the code location."""
    python = str(BIN / "python")
    return {
        "python -c pass": measure([python, "-c", "pass"], env)[1],
        "import dagster": measure([python, "-c", "import dagster"], env)[1],
        "import ct_platform.definitions": measure(
            [python, "-c", "import ct_platform.definitions"], env
        )[1],
    }


def bytecode_compiled() -> bool:
    """Whether the venv holds compiled bytecode (`make install` compiles it). Without it
    every process compiles each module it imports from source (PYTHONDONTWRITEBYTECODE
    stops Python caching it): seconds more per process, more for the job (Dagster, MLflow),
    so figures from the two kinds of environment do not compare."""
    origin = importlib.util.find_spec("dagster").origin
    return Path(importlib.util.cache_from_source(origin)).exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["bank", "1m"], default="bank")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    jobs, bares, stores, startups = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="ct-bench-landing-") as landing:
        spec_path, batches = prepare_landing(Path(landing), args.case)
        print(f"case {args.case}: {batches} batches of up to {BATCH_ROWS} rows", flush=True)
        print(f"bytecode compiled in the venv: {'yes' if bytecode_compiled() else 'NO'}")
        for repeat in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="ct-bench-") as folder:
                job_env = fresh_project(Path(folder), spec_path, "job")
                bare_env = fresh_project(Path(folder), spec_path, "bare")
                stores.append(create_stores(job_env))
                order = [("job", job_env), ("bare", bare_env)]
                for name, env in order if repeat % 2 == 0 else order[::-1]:
                    if name == "job":
                        jobs.append(run_job(env))
                    else:
                        bares.append(run_bare(env, spec_path))
                startups.append(startup(bare_env))
            print(
                f"repeat {repeat + 1}: job {jobs[-1].wall_s:.1f} s, bare {bares[-1].wall_s:.1f} s",
                flush=True,
            )
    report(jobs, bares, stores, startups)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for key, value in run.items():
            values[key].append(value)
    return {key: statistics.median(v) for key, v in values.items()}


def report(
    jobs: list[Measured],
    bares: list[Measured],
    stores: list[dict[str, float]],
    startups: list[dict[str, float]],
) -> None:
    job_s = statistics.median(m.wall_s for m in jobs)
    bare_s = statistics.median(m.wall_s for m in bares)
    print(f"\nruns: {len(jobs)} of each (medians)")
    print(
        f"bare script          {bare_s:7.1f} s   peak RSS "
        f"{statistics.median(m.peak_rss_mb for m in bares):6.0f} MiB"
    )
    print(
        f"dagster training_job {job_s:7.1f} s   peak RSS "
        f"{statistics.median(m.peak_rss_mb for m in jobs):6.0f} MiB"
    )
    print(f"ratio job/bare       {job_s / bare_s:7.2f}x  (overhead {job_s / bare_s - 1:.0%})")
    job_cpu = statistics.median(m.cpu_s for m in jobs)
    bare_cpu = statistics.median(m.cpu_s for m in bares)
    print(
        f"CPU s (user+sys)     bare {bare_cpu:.1f}, job {job_cpu:.1f}: "
        f"ratio {job_cpu / bare_cpu:.2f}x"
    )
    for name, seconds in medians(stores).items():
        print(f"one-time {name} creation {seconds:.1f} s (not counted)")
    for title, phases in (
        ("training_job by phase", medians([m.phases for m in jobs])),
        ("bare script by phase", medians([m.phases for m in bares])),
        ("start-up alone (fresh process)", medians(startups)),
    ):
        print(f"\n{title} (median s)")
        for name, seconds in phases.items():
            print(f"  {name:<52} {seconds:7.2f}")


if __name__ == "__main__":
    main()
