"""`ct history [--json]`: the audit log, oldest first.

Every promotion, approval request, approval, rejection, deployment and rollback, with who,
why, the versions (from -> to), when and the Dagster run. Read from `<CT_HOME>/audit/`, the
spec validated first as every command does (`cli.where`); an empty log is named. A
rollout's rollback (a candidate taken off the traffic; `champion` never moved) reads
"rollout rollback: rollout of v4 rolled back; champion v2 stays", not "v4 -> v2".
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ct_platform.governance.audit import AuditEvent

# Lines whose from-version is the champion at the time (`governance.approval`).
APPROVAL_KINDS = ("approval_requested", "approval", "rejection")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the events as a JSON list (every field) instead of a table",
    )


def run(args: argparse.Namespace) -> int:
    from ct_platform.cli.where import load_platform
    from ct_platform.governance.audit import AuditLogError, audit_path, read_events

    try:
        platform = load_platform()  # an invalid spec is refused, as every command does
        path = audit_path(platform.paths)
        events = read_events(path)
    except (AuditLogError, OSError, ValueError) as error:
        print(f"ct history: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([asdict(event) for event in events], indent=2))
    elif not events:
        print(
            f"nothing recorded yet in {path} ({platform.where()}): no promotion, approval, "
            "rejection, deployment or rollback"
        )
    else:
        print(render(events))
    return 0


def render(events: list[AuditEvent]) -> str:
    header = ("at", "event", "versions", "actor", "dagster run", "reason")
    rows = [
        (
            event.at,
            *_what_moved(event, champion),
            event.actor,
            (event.dagster_run_id or "")[:8],
            event.reason,
        )
        for event, champion in zip(events, champions_before(events), strict=True)
    ]
    table = [header, *rows]
    # Every column padded to its widest cell, except the last (reasons run long).
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(row[i].ljust(width) for i, width in enumerate(widths)), row[-1]])
        for row in table
    )


def champions_before(events: list[AuditEvent]) -> list[int | None]:
    """The champion of each event's model just before it (None: the log does not say),
    replayed from the lines that name it: promotions and champion rollbacks (their
    to-version), approval requests and decisions (their from-version)."""
    champions: dict[str, int | None] = {}
    before = []
    for event in events:
        champion = champions.get(event.model)
        before.append(champion)
        if event.kind == "promotion" or rolls_back_champion(event, champion):
            champions[event.model] = event.to_version
        elif event.kind in APPROVAL_KINDS and event.from_version is not None:
            champions[event.model] = event.from_version
    return before


def rolls_back_champion(event: AuditEvent, champion: int | None) -> bool:
    """A rollback of the champion moves `champion`; a rollout's rollback takes a candidate
    (never champion) off the traffic and `champion` stays. Unknown champion: a champion's."""
    return event.kind == "rollback" and champion in (None, event.from_version)


def _what_moved(event: AuditEvent, champion: int | None) -> tuple[str, str]:
    """The event and versions columns: "rollback", "v4 -> v2" for a champion rollback;
    "rollout rollback", "rollout of v4 rolled back; champion v2 stays" for a rollout's."""
    old, new = _version(event.from_version), _version(event.to_version)
    if event.kind == "rollback" and not rolls_back_champion(event, champion):
        return "rollout rollback", f"rollout of {old} rolled back; champion {new} stays"
    return event.kind, f"{old} -> {new}"


def _version(version: int | None) -> str:
    return "-" if version is None else f"v{version}"
