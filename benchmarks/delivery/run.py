"""Delivery benchmark: rollouts under `wrk` load, with the figures the proofs do not assert.

    .venv/bin/python benchmarks/delivery/run.py [--target local|docker] [--connections 8]
                                                [--replacement-only | --no-replacement]
                                                [--json out.json]

In a throwaway CT_HOME: fit two good bank models (versions 1 and 2) and the three bad
candidates of `ct_platform_tests.deployment.bad_candidates` (slow, errors, shifted), register
versions in a throwaway MLflow store, serve version 1 on the chosen target, then for each
scenario run `wrk` (single-row JSON POSTs over 300 rows, 2 threads, `--connections`) for the
whole rollout, driven one analysis at a time as soon as a step has `min_requests` requests:

- canary 20 -> 40 -> 60 -> 80 -> 100 % of version 2; blue-green switch to version 2;
- each bad candidate as a canary (it must be rolled back at the first step);
- docker only: a container replacement (what an image change does) under load, with the
  longest run of failed `/ping` probes (every 50 ms) as the gap on the stable address.

Prints per scenario: requests, failed requests (non-2xx, socket errors), requests/s, wrk's
p99, the seconds of each analysis step, the rollback time (the failing analysis call, from
reading the stats to the candidate at weight 0 and unloaded) and the outcome with its reason.
Before each scenario version 1 is redeployed (a hot swap) and `champion` reset to it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ct_platform.data.contract import check_contract  # noqa: E402
from ct_platform.deployment import target_for  # noqa: E402
from ct_platform.deployment.analysis import slot_window  # noqa: E402
from ct_platform.deployment.container import DockerTarget  # noqa: E402
from ct_platform.deployment.controller import RolloutController  # noqa: E402
from ct_platform.deployment.export import default_registry  # noqa: E402
from ct_platform.deployment.rollout import admin_client  # noqa: E402
from ct_platform.governance.lifecycle import set_champion  # noqa: E402
from ct_platform.registry.versions import CANARY  # noqa: E402
from ct_platform.settings import Spec, load_spec  # noqa: E402
from ct_platform.training.bundling import build_bundle  # noqa: E402
from ct_platform_tests.deployment.bad_candidates import BAD_CANDIDATES  # noqa: E402
from ct_platform_tests.deployment.conftest import fit_pipeline, register  # noqa: E402
from ct_platform_tests.deployment.delivery_proofs import drive  # noqa: E402
from ct_platform_tests.deployment.wrk_load import WrkLoad, WrkResult  # noqa: E402

TRAIN_ROWS, HOLDOUT_ROWS, LOAD_ROWS = 3000, 500, 300
MIN_REQUESTS = 200
P99_LIMIT_MS = 150.0
PROBE_INTERVAL_S = 0.05


@dataclass
class Scenario:
    name: str
    requests: int
    non2xx: int
    socket_errors: int
    requests_per_s: float
    wrk_p99_ms: float
    outcome: str
    reason: str
    # Per slot, from the server's own counts over the rollout: stable's share must be 0.
    stable_errors: int = 0
    candidate_errors: int = 0
    step_seconds: list[float] = field(default_factory=list)
    rollback_seconds: float | None = None
    gap_seconds: float | None = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["local", "docker"], default="local")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--replacement-only",
        action="store_true",
        help="docker: measure only the container replacement (the rollouts are the same "
        "admin calls on both targets)",
    )
    parser.add_argument(
        "--no-replacement",
        action="store_true",
        help="docker: the rollouts only, without the container replacement",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.replacement_only and args.no_replacement:
        parser.error("--replacement-only and --no-replacement exclude each other")

    with tempfile.TemporaryDirectory(prefix="ct-delivery-bench-") as home:
        os.environ["CT_HOME"] = home
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        spec = bench_spec(args.target)
        print(f"preparing models in {home} ...", flush=True)
        bundles, registry, rows = prepare(spec, bad_candidates=not args.replacement_only)
        target = target_for(spec)
        try:
            target.deploy(bundles["good"])
            scenarios = run_scenarios(
                spec,
                target,
                bundles,
                registry,
                rows,
                args.connections,
                rollouts=not args.replacement_only,
                replacement=not args.no_replacement,
            )
        finally:
            target.stop()
    print_table(args.target, args.connections, scenarios)
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in scenarios], indent=2))
    return 0


def bench_spec(target: str) -> Spec:
    spec = load_spec(REPO / "ct_platform.yaml")
    serving = spec.serving.model_copy(update={"target": target, "port": free_port()})
    deployment = spec.deployment
    analysis = deployment.analysis.model_copy(
        update={"min_requests": MIN_REQUESTS, "p99_latency_ms_max": P99_LIMIT_MS}
    )
    blue_green = deployment.blue_green.model_copy(update={"rollback_window_seconds": 0})
    return spec.model_copy(
        update={
            "serving": serving,
            "deployment": deployment.model_copy(
                update={"analysis": analysis, "blue_green": blue_green}
            ),
        }
    )


def prepare(
    spec: Spec, *, bad_candidates: bool = True
) -> tuple[dict[str, Path], Any, list[dict[str, Any]]]:
    """Bundles (version 1 'stable', version 2 'good' and the bad ones), MLflow, load rows."""
    frame = pd.read_csv(REPO / "data" / "bank_marketing.csv.gz", sep=";")
    clean = check_contract(frame.iloc[: TRAIN_ROWS + HOLDOUT_ROWS], spec.dataset).clean
    train, holdout = clean.iloc[:TRAIN_ROWS], clean.iloc[TRAIN_ROWS:]
    root, name = spec.paths.bundles, spec.model.name
    bundles = {
        label: build_bundle(
            fit_pipeline(spec, train, max_iter=max_iter),
            spec,
            name=name,
            version=version,
            fingerprint=f"bench-{version}",
            holdout=holdout,
            directory=root / f"{name}-v{version}",
        )
        for label, version, max_iter in (("stable", "1", 20), ("good", "2", 40))
    }
    for kind, build in BAD_CANDIDATES.items() if bad_candidates else ():
        bundles[kind] = build(spec, train, holdout, root / f"{name}-bad-{kind}", "2")
    registry = default_registry(spec)
    with tempfile.TemporaryDirectory() as scratch:
        for fingerprint in ("bench-1", "bench-2"):
            register(registry, spec, train, None, fingerprint=fingerprint, tmp_path=Path(scratch))
    raw = frame[spec.dataset.feature_columns].iloc[TRAIN_ROWS + HOLDOUT_ROWS + 100 :]
    rows = json.loads(raw.iloc[:LOAD_ROWS].to_json(orient="records"))
    return bundles, registry, rows


def run_scenarios(
    spec: Spec,
    target: Any,
    bundles: dict[str, Path],
    registry: Any,
    rows: list[dict[str, Any]],
    connections: int,
    *,
    rollouts: bool = True,
    replacement: bool = True,
) -> list[Scenario]:
    plan = [
        ("canary to 100 %", "canary", "good"),
        ("blue-green switch", "blue_green", "good"),
        *((f"bad candidate: {kind}", "canary", kind) for kind in BAD_CANDIDATES),
    ]
    if not rollouts:
        plan = []
    scenarios = []
    for label, strategy, bundle in plan:
        target.deploy(bundles["stable"])  # back to version 1 (a hot swap)
        set_champion(registry, 1, spec)
        if registry.alias_version(CANARY) is not None:
            registry.delete_alias(CANARY)
        print(f"running: {label} ...", flush=True)
        scenario = rollout_scenario(
            spec, strategy, label, bundles[bundle], registry, rows, connections
        )
        scenarios.append(scenario)
    if replacement and isinstance(target, DockerTarget):
        target.deploy(bundles["stable"])
        print("running: container replacement (image change) ...", flush=True)
        scenarios.append(replacement_scenario(target, rows, connections))
    return scenarios


def rollout_scenario(
    spec: Spec,
    strategy: str,
    label: str,
    bundle: Path,
    registry: Any,
    rows: list[dict[str, Any]],
    connections: int,
) -> Scenario:
    spec = spec.model_copy(
        update={"deployment": spec.deployment.model_copy(update={"strategy": strategy})}
    )
    admin = admin_client(spec)
    controller = RolloutController(spec, admin, registry)
    url = target_for(spec).status().endpoint.url
    with WrkLoad(url, rows, connections=connections) as load:
        started = controller.begin("2", bundle.name)
        done = drive(controller, admin, min_requests=MIN_REQUESTS)
        stats = admin.stats()
    scenario = scenario_of(label, load.result, done.rollout.status, done.rollout.reason, done)
    scenario.stable_errors = slot_window(started.origin, stats, "stable").errors
    scenario.candidate_errors = slot_window(started.origin, stats, "candidate").errors
    return scenario


def replacement_scenario(
    target: DockerTarget, rows: list[dict[str, Any]], connections: int
) -> Scenario:
    probe = PingProbe(target.url)
    with probe, WrkLoad(target.url, rows, connections=connections) as load:
        started = time.monotonic()
        target.recreate()
        seconds = time.monotonic() - started
    scenario = scenario_of(
        "container replacement", load.result, "served", f"recreate() took {seconds:.1f} s", None
    )
    scenario.gap_seconds = probe.longest_gap()
    return scenario


def scenario_of(label: str, result: WrkResult, outcome: str, reason: str, done: Any) -> Scenario:
    return Scenario(
        name=label,
        requests=result.requests,
        non2xx=result.non2xx,
        socket_errors=result.socket_errors,
        requests_per_s=result.requests / result.seconds if result.seconds else 0.0,
        wrk_p99_ms=result.p99_ms,
        outcome=outcome,
        reason=reason,
        step_seconds=[round(s, 2) for s in done.step_seconds] if done else [],
        rollback_seconds=done.rollback_seconds if done else None,
    )


class PingProbe:
    """GET /ping every 50 ms in a thread; the longest run of failures is the gap."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self.samples: list[tuple[float, bool]] = []

    def __enter__(self) -> PingProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ok = httpx.get(f"{self._url}/ping", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.samples.append((time.monotonic(), ok))
            time.sleep(PROBE_INTERVAL_S)

    def longest_gap(self) -> float:
        """Seconds from the last success before a failure run to the first success after."""
        longest, last_ok = 0.0, None
        failing = False
        for at, ok in self.samples:
            if ok:
                if failing and last_ok is not None:
                    longest = max(longest, at - last_ok)
                last_ok, failing = at, False
            else:
                failing = True
        return longest


def print_table(target: str, connections: int, scenarios: list[Scenario]) -> None:
    print(f"\ntarget {target}, wrk -t2 -c{connections}, single-row POSTs\n")
    header = (
        f"{'scenario':<26} {'requests':>9} {'non-2xx':>8} {'socket':>7} {'stable err':>10} "
        f"{'req/s':>7} {'p99 ms':>8} {'rollback s':>10}  outcome"
    )
    print(header)
    print("-" * len(header))
    for s in scenarios:
        rollback = f"{s.rollback_seconds:.2f}" if s.rollback_seconds is not None else "-"
        print(
            f"{s.name:<26} {s.requests:>9} {s.non2xx:>8} {s.socket_errors:>7} "
            f"{s.stable_errors:>10} {s.requests_per_s:>7.0f} {s.wrk_p99_ms:>8.1f} "
            f"{rollback:>10}  {s.outcome}"
        )
    print()
    for s in scenarios:
        steps = ", ".join(f"{x:g}" for x in s.step_seconds) or "-"
        gap = f"; gap {s.gap_seconds:.2f} s" if s.gap_seconds is not None else ""
        print(f"{s.name}: step seconds [{steps}]{gap}; {s.reason}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
