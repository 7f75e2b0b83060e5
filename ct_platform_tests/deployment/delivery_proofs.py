"""Drive a rollout to its end under load: shared by the delivery proofs and the benchmark.

`drive` advances the controller one analysis at a time, each as soon as the slot under
analysis has answered enough requests of the period for a verdict; nothing waits on a
clock, so a slow machine only makes it take longer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ct_platform.deployment.admin import AdminClient
from ct_platform.deployment.analysis import slot_window
from ct_platform.deployment.controller import Rollout, RolloutController
from ct_platform.settings import Spec

# A guard against a rollout that never ends (a bug), not a performance expectation.
DRIVE_LIMIT_S = 900.0
# Candidate requests a step needs for a verdict.
MIN_REQUESTS = 100
# The slow bad candidate takes a few hundred ms a row, a healthy ONNX model well under one:
# room left for a busy machine.
P99_LIMIT_MS = 150.0
# Every candidate, good or bad, is version 2 of its test's registry.
CANDIDATE = "2"


def progressive(spec: Spec, strategy: str, **sections: dict[str, Any]) -> Spec:
    """`spec` with `deployment.strategy` set and analysis limits a loaded box can meet;
    `sections`: more of `deployment` (e.g. `analysis={...}`, `ab={...}`)."""
    deployment = spec.deployment
    analysis = deployment.analysis.model_copy(
        update={"p99_latency_ms_max": 5000.0, **sections.pop("analysis", {})}
    )
    updates: dict[str, Any] = {"strategy": strategy, "analysis": analysis}
    for name, values in sections.items():
        updates[name] = getattr(deployment, name).model_copy(update=values)
    return spec.model_copy(update={"deployment": deployment.model_copy(update=updates)})


def delivery_spec(spec: Spec, strategy: str, **sections: dict[str, Any]) -> Spec:
    """`spec` with `deployment.strategy`, the proofs' analysis limits and `sections`
    (e.g. `blue_green={"rollback_window_seconds": 0}`; an `analysis` section overrides
    the proofs' limits)."""
    limits = {
        "min_requests": MIN_REQUESTS,
        "p99_latency_ms_max": P99_LIMIT_MS,
        **sections.pop("analysis", {}),
    }
    return progressive(spec, strategy, analysis=limits, **sections)


@dataclass
class Drive:
    rollout: Rollout
    # Wall-clock seconds of each analysis period (from its start to its verdict).
    step_seconds: list[float] = field(default_factory=list)
    # From the analysis that failed to the candidate's weight at 0 (None: no rollback).
    rollback_seconds: float | None = None


def analysed_slot(rollout: Rollout) -> str:
    return "candidate" if rollout.strategy in ("canary", "ab") else "shadow"


def drive(
    controller: RolloutController,
    admin: AdminClient,
    *,
    min_requests: int,
    on_step: Callable[[Rollout], None] = lambda rollout: None,
) -> Drive:
    """Advance the active rollout until it ends; its final state and the step timings."""
    rollout = controller.store.read()
    assert rollout is not None and rollout.active, "no active rollout to drive"
    result = Drive(rollout)
    deadline = time.monotonic() + DRIVE_LIMIT_S
    period_started = time.monotonic()
    while rollout.active:
        if time.monotonic() > deadline:
            raise AssertionError(f"rollout still {rollout.status} after {DRIVE_LIMIT_S:g} s")
        if rollout.phase != "switched" and not _enough(rollout, admin.stats(), min_requests):
            time.sleep(0.1)
            continue
        verdict_at = time.monotonic()
        rollout = controller.advance(force=True)
        assert rollout is not None
        done_at = time.monotonic()
        result.step_seconds.append(verdict_at - period_started)
        if rollout.status == "rolled_back":
            result.rollback_seconds = done_at - verdict_at
        period_started = done_at
        on_step(rollout)
    result.rollout = rollout
    return result


def _enough(rollout: Rollout, stats: dict[str, Any], min_requests: int) -> bool:
    return slot_window(rollout.cursor, stats, analysed_slot(rollout)).requests >= min_requests
