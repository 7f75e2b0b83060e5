"""`ct rollout status|pause|resume|promote|abort`: see and steer the progressive rollout.

- `status [--json]`: the current (or last) rollout: strategy, version, what it is doing
  or how it ended ("completed: version 6 became champion ..."), step, the candidate's
  traffic share while it runs, what the server serves now (`serving_now`, asked of the
  server), and its analyses, newest last;
- `pause`: the rollout stays where it is (weights unchanged), no analysis runs;
- `resume`: analyses start again, with a fresh period;
- `promote`: all traffic to the new version now; `champion` moves to it;
- `abort`: the candidate gets no more traffic and is unloaded; `champion` stays.

`status` asks the server first while a rollout is active: one whose server lost the
candidate (restarted, replaced) is ended then, rolled back with that reason, as the next
analysis would. `--reason` is recorded with the action. Exit status: 0 done, 1 the action
does not apply now (no active rollout; `pause` of a paused rollout or `resume` of a running
one: "already paused since <time>", nothing recorded), 2 the server or the spec could not
be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ct_platform.deployment.controller import Rollout
    from ct_platform.settings import Spec

COMMANDS = ("status", "pause", "resume", "promote", "abort")
SHOWN_ANALYSES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=COMMANDS)
    parser.add_argument("--reason", default="", help="recorded with the action")
    parser.add_argument("--json", action="store_true", help="status: print the state as JSON")


def run(args: argparse.Namespace) -> int:
    from ct_platform.deployment.controller import RolloutError
    from ct_platform.deployment.endpoint import DeploymentError
    from ct_platform.deployment.rollout import controller_for
    from ct_platform.governance.audit import current_user
    from ct_platform.settings import load_spec

    try:
        spec = load_spec()
        if args.action == "status":
            rollout = _current(spec)
            state = None if rollout is None else rollout.summary()
        else:
            driver = f"{current_user()} via ct rollout"
            controller = controller_for(spec, driver=driver)
            state = controller.control(args.action, args.reason).summary()
        if state is not None:
            state["serving_now"] = serving_now(spec)
    except RolloutError as exc:
        print(f"ct rollout {args.action}: {exc}", file=sys.stderr)
        return 1
    except (DeploymentError, OSError, ValueError) as exc:
        print(f"ct rollout {args.action}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(state, indent=2, default=str))
    else:
        print(describe(state))
    return 0


def serving_now(spec: Spec) -> str:
    """What the endpoint serves at this moment, as the server itself says (one GET)."""
    from ct_platform.deployment.rollout import served_version
    from ct_platform.deployment.targets import target_for

    status = target_for(spec).status()
    if status is None:
        return "nothing is deployed"
    url = status.endpoint.url
    served = served_version(url, spec.model.name) if status.healthy else None
    if served is None:
        return f"{url} does not answer ({status.detail})"
    return f"{url} serves version {served} as stable"


def _current(spec: Spec) -> Rollout | None:
    """The current (or last) rollout, checked against the server when it is active: a
    restarted server that lost the candidate ends it now, not at the next analysis."""
    from ct_platform.deployment.controller import RolloutStore
    from ct_platform.deployment.rollout import controller_for

    rollout = RolloutStore(spec.paths.rollouts).read()
    if rollout is None or not rollout.active:
        return rollout
    return controller_for(spec).reconcile()


def headline(state: dict[str, Any]) -> str:
    """What the rollout is doing, or how it ended (past tense: what serves now is asked of
    the server, `serving_now`), never the version that served when it started."""
    what = f"rollout {state['id']}: {state['strategy']} of version {state['version']}"
    new, old = state["version"], state["previous_version"]
    status = state["status"]
    if status in ("running", "paused"):
        if state["phase"] == "switched":
            return (
                f"{what} {status}: switched, version {new} is champion; version {old} stays "
                "loaded for a rollback"
            )
        if state["phase"] in ("verify", "shadow"):
            return f"{what} {status}: it scores shadow copies of traffic version {old} answers"
        share = f"{100 * state['weight']:g} %"
        return f"{what} {status}: it answers {share} of traffic beside version {old} (stable)"
    if status == "completed":
        return f"{what} completed: version {new} took all traffic and became champion"
    ended = "stopped" if status == "stopped" else "rolled back"
    if state["phase"] == "switched":
        return f"{what} {ended} after its switch: version {old} became champion again"
    return f"{what} {ended}: version {new} was taken out of traffic; version {old} stayed champion"


def describe(state: dict[str, Any] | None) -> str:
    """A few lines for people: what rolls out, where it stands, its last analyses."""
    if state is None:
        return "no rollout yet"
    position = f"status {state['status']}, phase {state['phase']}, step {state['step']}"
    if state["status"] in ("running", "paused"):
        position += f", candidate traffic {100 * state['weight']:g} %"
    elif state.get("finished_at"):
        ended = datetime.fromtimestamp(state["finished_at"], UTC).isoformat(timespec="seconds")
        position += f", ended {ended}"
    lines = [headline(state), position]
    if state.get("serving_now"):
        lines.append(f"now: {state['serving_now']}")
    if state["reason"]:
        by = f" (by {state['ended_by']})" if state.get("ended_by") else ""
        lines.append(f"reason: {state['reason']}{by}")
    if state["decision"]:
        lines.append(f"decision: {json.dumps(state['decision'], default=str)}")
    for entry in state["history"][-SHOWN_ANALYSES:]:
        at = datetime.fromtimestamp(entry["at"], UTC).strftime("%H:%M:%S")
        lines.append(
            f"  {at} step {entry['step']} {100 * entry['weight']:g} % "
            f"{entry['verdict']}: {entry['reason']}"
        )
    return "\n".join(lines)
