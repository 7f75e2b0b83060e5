"""Benchmark: the fast drift check vs full-data Evidently on 1,000,000 rows x 23 columns.

    .venv/bin/python benchmarks/drift/bench_drift.py [--rows 1000000] [--repeats 5]
        [--evidently-repeats 1]

Data (reference and current, `--rows` each): 20 numeric columns (the bank data's 9 numeric
columns resampled, with a little jitter on the continuous ones, plus 11 synthetic ones of
different shapes: normal, log-normal, heavy-tailed, uniform, bimodal, counts, a 0/1 flag, a
4-level ordinal) and 3 categorical ones (the bank's job, education, marital). The current data
is a fresh resample of the same distributions with drift planted in 8 columns of various
kinds and strengths (see `PLANTED`); the other 15 columns have none.

Each engine runs in its own subprocess, which reports its own peak RSS (VmHWM): full
Evidently `DataDriftPreset` (default methods, no HTML); the fast check given the reference
frame; and the fast check given the saved reference profile (the production path: the
training data is not reloaded). Times: `check` is the drift computation alone, `load` reading
the Parquet files (and the profile). Medians over the repeats; ratios are Evidently / fast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
BANK_CSV = REPO / "data" / "bank_marketing.csv.gz"
BANK_NUMERIC = ["age", "campaign", "pdays", "previous", "emp.var.rate", "cons.price.idx"]
BANK_NUMERIC += ["cons.conf.idx", "euribor3m", "nr.employed"]
BANK_CONTINUOUS = ["emp.var.rate", "cons.price.idx", "cons.conf.idx", "euribor3m", "nr.employed"]
CATEGORICAL = ["job", "education", "marital"]
SYNTHETIC = ["normal", "normal_small_shift", "lognormal", "student_t", "uniform", "bimodal"]
SYNTHETIC += ["exponential", "gamma", "poisson", "flag", "ordinal"]
# column -> what is planted in the current data
PLANTED = {
    "age": "+5 years",
    "euribor3m": "-1.0 (rates fall)",
    "normal": "+0.3 sd",
    "lognormal": "x1.3 scale",
    "poisson": "lambda 3 -> 3.5",
    "flag": "rate 0.20 -> 0.35",
    "job": "new category on 10 % of rows",
    "marital": "40 % set to single",
}
# Deliberately below the 0.1 threshold: a real but small change that must NOT be flagged.
SUBTLE = {"normal_small_shift": "+0.05 sd", "uniform": "+0.015 (0.05 sd)"}


def dataset_spec():
    from ct_platform.settings import ColumnSpec, DatasetSpec

    columns = {name: ColumnSpec(type="float") for name in [*BANK_NUMERIC, *SYNTHETIC]}
    columns |= {name: ColumnSpec(type="category") for name in CATEGORICAL}
    return DatasetSpec(name="bench", target="y", task="classification", columns=columns)


def generate(rows: int, seed: int, drifted: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    bank = pd.read_csv(BANK_CSV, sep=";")
    bank.loc[bank["pdays"] == 999, "pdays"] = np.nan  # the sentinel, as a cleaned frame has it
    picked = bank.iloc[rng.integers(0, len(bank), rows)].reset_index(drop=True)
    frame = pd.DataFrame({name: picked[name].astype("float64") for name in BANK_NUMERIC})
    for name in BANK_CONTINUOUS:
        frame[name] += rng.normal(0, 0.01 * bank[name].std(), rows)
    flag_rate, lam, scale = (0.35, 3.5, 1.3) if drifted else (0.2, 3.0, 1.0)
    frame["normal"] = rng.normal(50, 10, rows) + (3.0 if drifted else 0.0)
    frame["normal_small_shift"] = rng.normal(0, 1, rows) + (0.05 if drifted else 0.0)
    frame["lognormal"] = rng.lognormal(0, 1, rows) * scale
    frame["student_t"] = rng.standard_t(3, rows)
    frame["uniform"] = rng.uniform(0, 1, rows) + (0.015 if drifted else 0.0)
    low = rng.random(rows) < 0.3
    frame["bimodal"] = np.where(low, rng.normal(-2, 0.5, rows), rng.normal(3, 1, rows))
    frame["exponential"] = rng.exponential(2.0, rows)
    frame["gamma"] = rng.gamma(2.0, 2.0, rows)
    frame["poisson"] = rng.poisson(lam, rows).astype("float64")
    frame["flag"] = (rng.random(rows) < flag_rate).astype("float64")
    frame["ordinal"] = rng.choice([1.0, 2.0, 3.0, 4.0], rows, p=[0.4, 0.3, 0.2, 0.1])
    for name in CATEGORICAL:
        frame[name] = picked[name].astype(object)
    if drifted:
        frame["age"] += 5
        frame["euribor3m"] -= 1.0
        frame.loc[rng.random(rows) < 0.1, "job"] = "crypto-trader"
        frame.loc[rng.random(rows) < 0.4, "marital"] = "single"
    return frame


def load(path: Path) -> pd.DataFrame:
    """A cleaned frame again: categoricals as Python str in object dtype. Going through a
    categorical makes equal strings share one object (a million rows of 'married' need not
    be a million string objects); the checks see the same values either way."""
    # self_destruct frees each Arrow column once converted: peak ~1x the frame, not 2x.
    frame = pq.read_table(path).to_pandas(self_destruct=True, split_blocks=True)
    for name in CATEGORICAL:
        frame[name] = frame[name].astype("category").astype(object)
    return frame


# --- child processes: one engine each, reporting its own figures -------------------------


def child(engine: str, folder: Path) -> None:
    dataset = dataset_spec()
    started = time.perf_counter()
    current = load(folder / "current.parquet")
    if engine == "fast-profile":
        from ct_platform.monitoring.drift import ReferenceProfile

        reference = ReferenceProfile.load(folder / "reference_profile.json")
    else:
        reference = load(folder / "reference.parquet")
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    if engine == "evidently":
        from ct_platform.monitoring.evidently_reports import evidently_drift

        result, _ = evidently_drift(reference, current, dataset, drift_share_threshold=0.5)
    else:
        from ct_platform.monitoring.drift import detect_drift

        result = detect_drift(reference, current, dataset, drift_share_threshold=0.5)
    check_s = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    verdicts = {name: [c.method, c.score, c.drift] for name, c in result.columns.items()}
    print(
        json.dumps(
            {
                "load_s": load_s,
                "check_s": check_s,
                "peak_rss_mb": peak_mb,
                "verdicts": verdicts,
                "drift_share": result.drift_share,
            }
        )
    )


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the
    parent through fork + exec, so a child would report the parent's peak if larger."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(engine: str, folder: Path) -> dict:
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, __file__, "--child", engine, str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    figures["process_s"] = time.perf_counter() - started
    return figures


# --- the parent: data, runs, summary -----------------------------------------------------


def prepare(folder: Path, rows: int) -> float:
    """Write reference/current Parquet and the reference profile; returns the profile time."""
    from ct_platform.monitoring.drift import ReferenceProfile

    reference = generate(rows, seed=1, drifted=False)
    generate(rows, seed=2, drifted=True).to_parquet(folder / "current.parquet")
    reference.to_parquet(folder / "reference.parquet")
    started = time.perf_counter()
    profile = ReferenceProfile.from_frame(reference, dataset_spec())
    profile.save(folder / "reference_profile.json")
    return time.perf_counter() - started


def summarise(runs: dict[str, list[dict]], profile_s: float, rows: int, folder: Path) -> None:
    medians = {
        engine: {
            key: statistics.median(r[key] for r in results)
            for key in ("check_s", "load_s", "process_s", "peak_rss_mb")
        }
        for engine, results in runs.items()
    }
    print(f"\n{rows:,} rows x 23 columns (reference and current each); medians:")
    print(f"{'engine':<14} {'check s':>9} {'load s':>8} {'process s':>10} {'peak RSS MB':>12}")
    for engine, m in medians.items():
        print(
            f"{engine:<14} {m['check_s']:>9.2f} {m['load_s']:>8.2f} {m['process_s']:>10.2f} "
            f"{m['peak_rss_mb']:>12.0f}"
        )
    print(
        f"reference profile built once in {profile_s:.2f} s "
        f"({(folder / 'reference_profile.json').stat().st_size / 1e6:.2f} MB JSON)"
    )
    evidently = medians["evidently"]
    for engine in ("fast", "fast-profile"):
        m = medians[engine]
        print(
            f"ratio evidently/{engine}: check time x{evidently['check_s'] / m['check_s']:.0f}, "
            f"process time x{evidently['process_s'] / m['process_s']:.1f}, "
            f"peak RSS x{evidently['peak_rss_mb'] / m['peak_rss_mb']:.1f}"
        )
    truth = runs["evidently"][0]["verdicts"]
    print(
        f"\n{'column':<20} {'evidently method':<16} {'score':>9} {'drift':>6} | "
        f"{'fast score':>10} {'drift':>6}  planted"
    )
    for engine in ("fast", "fast-profile"):
        fast = runs[engine][0]["verdicts"]
        agree = sum(fast[c][0] == truth[c][0] and fast[c][2] == truth[c][2] for c in truth)
        print(f"agreement {engine}: {agree}/{len(truth)} columns ({agree / len(truth):.0%})")
    fast = runs["fast-profile"][0]["verdicts"]
    for name, (method, score, drift) in truth.items():
        note = PLANTED.get(name) or (f"subtle: {SUBTLE[name]}" if name in SUBTLE else "")
        print(
            f"{name:<20} {method:<16} {score:>9.4f} {drift!s:>6} | "
            f"{fast[name][1]:>10.4f} {fast[name][2]!s:>6}  {note}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each fast variant")
    parser.add_argument("--evidently-repeats", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory(prefix="bench_drift_") as folder:
        profile_s = prepare(Path(folder), args.rows)
        plan = [
            ("fast", args.repeats),
            ("fast-profile", args.repeats),
            ("evidently", args.evidently_repeats),
        ]
        runs: dict[str, list[dict]] = {engine: [] for engine, _ in plan}
        for engine, repeats in plan:
            for _ in range(repeats):
                runs[engine].append(run_child(engine, Path(folder)))
                print(
                    f"{engine}: {runs[engine][-1]['check_s']:.2f} s check, "
                    f"{runs[engine][-1]['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
        summarise(runs, profile_s, args.rows, Path(folder))


if __name__ == "__main__":
    main()
