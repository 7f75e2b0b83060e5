"""`ct rollback [--reason ...] [--by NAME]`: undo the latest change to what serves, in one step.

With no rollout active: moves the MLflow alias `champion` back to the previous champion that
passed its gates (from the audit log; MLflow aliases keep no history), redeploys it to the
spec's target and records both in the audit log. Refuses, changing nothing, when there is no
previous champion.

While a rollout is active, the latest change is that rollout: `ct rollback` ends it, rolled
back by name (what `ct rollout abort` does): the candidate leaves traffic and its `canary`
alias goes (that version's only), `champion` stays (after a blue-green switch, it moves back
to the version the switch replaced), the rollout records who and why, and the audit log a
rollback line. `champion` is not moved further back in the same step: the answer names the
version a second `ct rollback` would bring back. (It once redeployed the previous champion
into the server under the rollout, which took the candidate out without a word.)

Exit status: 0 rolled back and serving; 1 refused or the deployment failed (the message says
which; after a failed deployment the alias has moved and the endpoint watchdog repairs it).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.settings import Spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default="manual rollback", help="why (recorded)")
    parser.add_argument("--by", help="who rolls back (default: $USER)")


def run(args: argparse.Namespace) -> int:
    from ct_platform.cli.where import load_platform
    from ct_platform.deployment.controller import RolloutError, active_rollout
    from ct_platform.deployment.endpoint import DeploymentError
    from ct_platform.deployment.export import default_registry
    from ct_platform.governance.audit import current_user
    from ct_platform.governance.lifecycle import RollbackRefused, rollback

    actor = args.by or current_user()
    try:
        platform = load_platform()  # an invalid spec is refused before anything else
    except ValueError as error:  # SpecError, OtherPlatformError
        print(f"ct rollback: {error}", file=sys.stderr)
        return 1
    spec = platform.spec
    try:
        registry = default_registry(spec)
        if active_rollout(spec) is not None:
            print(_end_rollout(spec, registry, actor, args.reason))
            return 0
        done = rollback(registry, spec, reason=args.reason, actor=actor)
    except (RollbackRefused, RolloutError) as error:
        # Named: a refusal read on another platform than the running one must say so.
        print(f"ct rollback: {error} ({platform.where()})", file=sys.stderr)
        return 1
    except DeploymentError as error:
        print(f"ct rollback: champion moved, but the deployment failed: {error}", file=sys.stderr)
        return 1
    print(
        f"champion: version {done.from_version} -> {done.to_version}; "
        f"{done.endpoint.url} ({done.endpoint.target}) serves version {done.endpoint.version}"
    )
    if done.note:
        print(f"ct rollback: {done.note}", file=sys.stderr)
    return 0


def _end_rollout(spec: Spec, registry: ModelRegistry, actor: str, reason: str) -> str:
    """Roll the active rollout back by name; what it did, and what a second rollback does."""
    from ct_platform.deployment.rollout import controller_for
    from ct_platform.registry.versions import CHAMPION

    controller = controller_for(spec, registry, driver=f"{actor} via ct rollback")
    ended = controller.control("abort", reason)
    champion = registry.alias_version(CHAMPION)
    what = (
        f"rollout {ended.id} ({ended.label} of version {ended.version}) rolled back by "
        f"{ended.ended_by}: {ended.reason}. Version {ended.version} is out of traffic and no "
        "longer holds `canary`"
    )
    if champion is None:
        return f"{what}; no version is champion."
    then = _next_rollback(registry, champion.version)
    return f"{what}; champion is version {champion.version}. {then}"


def _next_rollback(registry: ModelRegistry, champion: int) -> str:
    """What a second `ct rollback` would do."""
    from ct_platform.governance.lifecycle import RollbackRefused, previous_champion

    try:
        earlier = previous_champion(registry, champion).version
    except RollbackRefused:
        return "There is no earlier champion to roll back to."
    return f"`ct rollback` again moves champion to version {earlier}."
