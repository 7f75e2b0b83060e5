"""`ct rollout status|pause|resume|promote|abort`: see and steer the progressive rollout.

- `status [--json]`: the current (or last) rollout: strategy, version, what it is doing
  or how it ended ("completed: version 6 became champion ..."), step, the candidate's
  traffic share while it runs, what the server serves now (`serving_now`, asked of the
  server: every slot with its version and share of traffic), the champion as the registry
  holds it (`champion_version`), and its analyses, newest last;
- `pause`: the rollout stays where it is (weights unchanged), no analysis runs;
- `resume`: analyses start again, with a fresh period;
- `promote`: all traffic to the new version now; `champion` moves to it;
- `abort`: the candidate gets no more traffic and is unloaded; `champion` stays.

The spec and CT_HOME are resolved as every `ct` command does (`cli.where`); with no
rollout there, `status` names the rollouts folder, the spec and CT_HOME it read.
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
    from ct_platform.cli.where import load_platform
    from ct_platform.deployment.controller import RolloutError
    from ct_platform.deployment.endpoint import DeploymentError
    from ct_platform.deployment.rollout import controller_for
    from ct_platform.governance.audit import current_user

    try:
        platform = load_platform()  # an invalid spec is refused before anything else
        spec = platform.spec
        if args.action == "status":
            rollout = _current(spec)
            state = None if rollout is None else rollout.summary()
        else:
            driver = f"{current_user()} via ct rollout"
            controller = controller_for(spec, driver=driver)
            state = controller.control(args.action, args.reason).summary()
        if state is not None:
            state["serving_now"] = serving_now(spec)
            state["champion_version"] = champion_now(spec)
    except RolloutError as exc:
        print(f"ct rollout {args.action}: {exc}", file=sys.stderr)
        return 1
    except (DeploymentError, OSError, ValueError) as exc:
        print(f"ct rollout {args.action}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(state, indent=2, default=str))
    elif state is None:
        print(f"no rollout yet in {spec.paths.rollouts} ({platform.where()})")
    else:
        print(describe(state))
    return 0


def serving_now(spec: Spec) -> str:
    """What the endpoint serves at this moment, every slot, as the server itself says (one
    GET of its admin API): "http://... serves version 1 as stable (80 % of traffic),
    version 2 as candidate (20 % of traffic)"."""
    import httpx

    from ct_platform.deployment.admin import AdminAuthError
    from ct_platform.deployment.rollout import admin_client
    from ct_platform.deployment.targets import target_for

    status = target_for(spec).status()
    if status is None:
        return "nothing is deployed"
    url = status.endpoint.url
    if not status.healthy:
        return f"{url} does not answer ({status.detail})"
    try:
        routing = admin_client(spec, url).slots()
    except (httpx.HTTPError, AdminAuthError) as exc:
        return f"{url} answers /ping, but not GET /admin/slots ({exc})"
    return f"{url} serves {describe_slots(routing)}"


def describe_slots(routing: dict[str, Any]) -> str:
    """Every slot of `GET /admin/slots` with its version and share of traffic."""
    stable = routing["stable"]["version"]
    candidate = routing.get("candidate")
    weight = float(routing.get("candidate_weight") or 0.0)
    if candidate is None or routing.get("shadow"):
        slots = [f"version {stable} as stable (all traffic)"]
    else:
        slots = [
            f"version {stable} as stable ({100 * (1 - weight):g} % of traffic)",
            f"version {candidate['version']} as candidate ({100 * weight:g} % of traffic)",
        ]
    if candidate is not None and routing.get("shadow"):
        slots.append(f"version {candidate['version']} as shadow (scores copies, answers none)")
    if routing.get("previous"):
        slots.append(f"version {routing['previous']['version']} as previous (no traffic)")
    return ", ".join(slots)


def champion_now(spec: Spec) -> str | None:
    """The version holding `champion` in the registry now (None: none)."""
    from ct_platform.deployment.export import default_registry
    from ct_platform.registry.versions import CHAMPION

    champion = default_registry(spec).alias_version(CHAMPION)
    return str(champion.version) if champion else None


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
    the server, `serving_now`), never the version that served when it started; the
    champion is the registry's (`champion_version`), never inferred from the rollout."""
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
    champion = state.get("champion_version")
    now = f"the champion is version {champion}" if champion else "no version is champion"
    if state["phase"] == "switched":
        return f"{what} {ended} after its switch: version {old} serves again; {now}"
    return f"{what} {ended}: version {new} was taken out of traffic; {now}"


def describe(state: dict[str, Any]) -> str:
    """A few lines for people: what rolls out, where it stands, its last analyses."""
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
