"""Scale figures: the training job and the drift check on a 1,000,000-row history.

    .venv/bin/python deploy/scale/run.py [--rows 1000000] [--batches 10] [--keep]

Synthesises the history by resampling the bank data with replacement, keeping the time
order (sorted row indices), as `--batches` landed batches of equal size; the window is all
of them (`evaluation.window_batches` = `--batches`), so the training job fits the whole
history. Everything happens in a temp CT_HOME/DAGSTER_HOME. Measured with `/usr/bin/time -v`
(wall time and peak resident memory of the whole process tree's largest process):

1. ingest: each batch through `batch_job` (in one process, as the run worker would);
2. `dagster job execute -j training_job` (the CI command: fit, evaluate, gates, register);
3. `ct drift <history> <newest batch>`: the production drift check's test, with the whole
   history as reference.

Resampling repeats each row ~24 times, so the scale spec allows duplicates
(`dataset.duplicate_rate_max: 1.0`); everything else is the shipped spec. Prints a Markdown
table (deploy/README.md quotes it). A benchmark, not a test: it takes many minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TIME = "/usr/bin/time"


def synthesise(rows: int, batches: int, landing: Path, separator: str) -> list[Path]:
    """`rows` bank rows drawn with replacement, time order kept, as `batches` CSV files."""
    bank = pd.read_csv(REPO / "data" / "bank_marketing.csv.gz", sep=separator)
    order = np.sort(np.random.default_rng(0).integers(0, len(bank), rows))
    history = bank.iloc[order].reset_index(drop=True)
    paths = []
    for number, part in enumerate(np.array_split(np.arange(rows), batches), start=1):
        path = landing / f"batch-{number:05d}.csv"
        history.iloc[part].to_csv(path, sep=separator, index=False)
        paths.append(path)
    return paths


def scale_spec(folder: Path, batches: int) -> Path:
    raw = yaml.safe_load((REPO / "ct_platform.yaml").read_text())
    raw["dataset"]["landing_dir"] = str(folder / "incoming")
    raw["dataset"]["duplicate_rate_max"] = 1.0
    raw["evaluation"]["window_batches"] = batches
    path = folder / "ct_platform.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def measured(label: str, command: list[str], env: dict[str, str]) -> dict[str, str]:
    """Run `command` under /usr/bin/time -v; wall seconds and peak RSS (MB)."""
    started = time.monotonic()
    done = subprocess.run([TIME, "-v", *command], env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{label} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-5000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    cpu = sum(
        float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", done.stderr)[1])
        for kind in ("User", "System")
    )
    return {
        "step": label,
        "wall_s": f"{wall:.0f}",
        "cpu_s": f"{cpu:.0f}",
        "peak_mb": f"{peak_kb / 1024:.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="ct-scale-"))
    (folder / "incoming").mkdir()
    spec_path = scale_spec(folder, args.batches)
    env = {
        **os.environ,
        "CT_SPEC": str(spec_path),
        "CT_HOME": str(folder / "ct_home"),
        "DAGSTER_HOME": str(folder / "dagster"),
        "PYTHONWARNINGS": "ignore",
    }
    (folder / "dagster").mkdir()
    shutil.copy(REPO / "dagster.yaml", folder / "dagster" / "dagster.yaml")
    started = time.monotonic()
    landed = synthesise(args.rows, args.batches, folder / "incoming", ";")
    print(f"synthesised {args.rows:,} rows in {time.monotonic() - started:.0f} s: {folder}")

    ingest = (
        "import dagster as dg, sys\n"
        "from ct_platform.definitions import build_definitions\n"
        "from ct_platform.settings import load_spec\n"
        "job = build_definitions(load_spec()).resolve_job_def('batch_job')\n"
        "instance = dg.DagsterInstance.get()\n"
        "keys = sys.argv[1:]\n"
        "instance.add_dynamic_partitions('batches', keys)\n"
        "for key in keys:\n"
        "    assert job.execute_in_process(instance=instance, partition_key=key).success, key\n"
    )
    figures = [
        measured(
            f"ingest (batch_job x {len(landed)})",
            [str(BIN / "python"), "-c", ingest, *(p.name for p in landed)],
            env,
        ),
        measured(
            "training_job",
            [
                str(BIN / "dagster"),
                "job",
                "execute",
                "-m",
                "ct_platform.definitions",
                "-j",
                "training_job",
            ],
            env,
        ),
    ]
    history = folder / "history.csv"
    with history.open("w") as out:
        for number, path in enumerate(landed):
            text = path.read_text()
            out.write(text if number == 0 else text.split("\n", 1)[1])
    figures.append(
        measured(
            "ct drift (history vs newest batch)",
            [str(BIN / "ct"), "drift", str(history), str(landed[-1])],
            env,
        )
    )
    print(f"\n{args.rows:,} rows, {args.batches} batches, {os.cpu_count()} CPUs")
    print("| step | wall s | CPU s | peak RSS MB |\n|---|---|---|---|")
    for row in figures:
        print(f"| {row['step']} | {row['wall_s']} | {row['cpu_s']} | {row['peak_mb']} |")
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
