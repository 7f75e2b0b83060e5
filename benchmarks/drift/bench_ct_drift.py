"""Benchmark: `ct drift` as a whole process on bank-schema Parquet files of 1M and 10M rows.

    nice .venv/bin/python benchmarks/drift/bench_ct_drift.py [--rows 1000000 10000000]
        [--repeats 3] [--evidently-rows 50000] [--evidently-repeats 1] [--csv]

`--csv`: `ct drift` and the floor read the same rows from `;`-separated CSV files instead
(written once next to the Parquet files, ~150 MB per million rows); Evidently still samples
the Parquet files (same rows).

The files come from `bank_files.py` (generated once into `~/.cache/ct-platform-bench`, or
`$CT_BENCH_CACHE`; 10M rows take a few minutes and 0.9 GB). Per size, alternating, each a
fresh process timed by `/usr/bin/time` (wall time and peak RSS):

- `ct drift REFERENCE CURRENT --json` with the repository's bank spec: imports, reading,
  typing, sampling, the tests and the report, everything a user waits for;
- floor: a process that imports the same libraries and streams the feature columns of both
  files the same way, doing nothing with them (`monitoring.sources.floor_read`);
- full Evidently (`DataDriftPreset`, default methods) on `--evidently-rows` random rows of
  each file (`--evidently-repeats` runs, default 1: minutes each): the agreement figure
  (same method and verdict per column, share of columns, largest score gap). At least
  50,000 rows, so that pdays (a value on ~4 % of rows) keeps over 1,000 values and Evidently
  picks the same method for it as on the whole file.

Children run without PYTHONDONTWRITEBYTECODE and after one unmeasured warm-up, so imports
come from bytecode caches as in an installed environment (compiling them instead costs ~9 s
per process on this box). Medians of `--repeats`; `uptime` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bank_files import PLANTED, ensure_csv_files, ensure_files

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "ct_platform.yaml"
PYTHON = sys.executable
CT = str(Path(sys.executable).parent / "ct")

FLOOR = """
import sys
from ct_platform.monitoring.sources import floor_read
from ct_platform.settings import load_spec
dataset = load_spec().dataset
print(sum(floor_read(path, dataset) for path in sys.argv[1:]))
"""

EVIDENTLY = """
import json, sys
from ct_platform.monitoring.evidently_reports import evidently_drift
from ct_platform.monitoring.frames import typed_features
from ct_platform.monitoring.sources import sample_parquet
from ct_platform.settings import load_spec
spec = load_spec()
dataset, rows = spec.dataset, int(sys.argv[3])
frames = [
    typed_features(sample_parquet(path, dataset.feature_columns, rows, seed=i), dataset,
                   where=path)
    for i, path in enumerate(sys.argv[1:3])
]
result, _ = evidently_drift(*frames, dataset,
                            drift_share_threshold=spec.monitoring.drift_share_threshold)
print(json.dumps(result.to_dict()))
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, str, float]:
    """(wall seconds, peak RSS MB, stdout, CPU seconds) of one process, by /usr/bin/time.
    CPU time (user + system) is quoted too: on a box with a load average far above its
    2 cores, wall time mostly measures the wait for a core."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as figures:
        completed = subprocess.run(
            ["/usr/bin/time", "-o", figures.name, "-f", "%e %M %U %S", *command],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if completed.returncode not in (0, 3, 4):  # 4: a verdict, with contract violations
            raise RuntimeError(f"{command[:3]} failed: {completed.stderr[-2000:]}")
        wall, peak_kb, user, system = figures.read().split()[-4:]
    return float(wall), float(peak_kb) / 1024, completed.stdout, float(user) + float(system)


def commands(folder: Path, evidently_rows: int, suffix: str) -> dict[str, list[str]]:
    files = [str(folder / f"reference{suffix}"), str(folder / f"current{suffix}")]
    parquet = [str(folder / "reference.parquet"), str(folder / "current.parquet")]
    return {
        "ct drift": [CT, "drift", *files, "--json"],
        "floor (read only)": [PYTHON, "-c", FLOOR, *files],
        f"Evidently, {evidently_rows:,}-row samples": [
            PYTHON,
            "-c",
            EVIDENTLY,
            *parquet,
            str(evidently_rows),
        ],
    }


def agreement(ours: dict, theirs: dict) -> tuple[int, int, float, list[str]]:
    tested = {n: c for n, c in theirs["columns"].items() if c["status"] != "not tested"}
    same = [
        n
        for n, c in tested.items()
        if ours["columns"][n].get("method") == c["method"]
        and ours["columns"][n]["drift"] == c["drift"]
    ]
    gap = max(abs(ours["columns"][n]["score"] - c["score"]) for n, c in tested.items())
    return len(same), len(tested), gap, sorted(n for n, c in ours["columns"].items() if c["drift"])


def bench(
    rows: int,
    repeats: int,
    evidently_rows: int,
    evidently_repeats: int,
    env: dict[str, str],
    csv: bool = False,
) -> None:
    folder = ensure_csv_files(rows) if csv else ensure_files(rows)
    plan = commands(folder, evidently_rows, ".csv" if csv else ".parquet")
    timed(plan["ct drift"], env)  # warm-up: bytecode caches, page cache
    runs: dict[str, list[tuple[float, float, str, float]]] = {name: [] for name in plan}
    for repeat in range(repeats):
        for name, command in plan.items():
            if name.startswith("Evidently") and repeat >= evidently_repeats:
                continue
            runs[name].append(timed(command, env))
            wall, peak, _, cpu = runs[name][-1]
            print(f"  {rows:,} {name}: {wall:.2f} s ({cpu:.2f} s CPU), {peak:.0f} MB", flush=True)
    print(
        f"\n{rows:,} rows per {'CSV' if csv else 'Parquet'} file ({folder}); medians of {repeats}:"
    )
    print(f"{'process':<34} {'wall s':>8} {'CPU s':>7} {'peak RSS MB':>12}")
    medians = {}
    for name, results in runs.items():
        medians[name] = tuple(statistics.median(r[i] for r in results) for i in (0, 3, 1))
        wall, cpu, peak = medians[name]
        print(f"{name:<34} {wall:>8.2f} {cpu:>7.2f} {peak:>12.0f}")
    ours_wall, ours_cpu, ours_rss = medians["ct drift"]
    floor_wall, floor_cpu, floor_rss = medians["floor (read only)"]
    print(
        f"ct drift / floor: wall x{ours_wall / floor_wall:.2f}, CPU x{ours_cpu / floor_cpu:.2f}, "
        f"RSS x{ours_rss / floor_rss:.2f}"
    )
    evidently = next(name for name in plan if name.startswith("Evidently"))
    ours, theirs = json.loads(runs["ct drift"][0][2]), json.loads(runs[evidently][0][2])
    same, tested, gap, drifted = agreement(ours, theirs)
    print(
        f"agreement with Evidently on samples: {same}/{tested} columns ({same / tested:.0%}), "
        f"largest score gap {gap:.4f}; ct drift flags {drifted} (planted: {sorted(PLANTED)}); "
        f"Evidently / ct drift time x{medians[evidently][0] / ours_wall:.1f}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--evidently-rows", type=int, default=50_000)
    parser.add_argument("--evidently-repeats", type=int, default=1)
    parser.add_argument("--csv", action="store_true", help="ct drift and the floor on CSV files")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"CT_SPEC": str(SPEC), "CT_HOME": tempfile.mkdtemp(prefix="bench_ct_drift_")}
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    for rows in args.rows:
        bench(rows, args.repeats, args.evidently_rows, args.evidently_repeats, env, args.csv)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
