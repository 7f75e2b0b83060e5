"""`ct history [--json]`: the audit log, oldest first.

Every promotion, approval request, approval, rejection, deployment and rollback, with who,
why, the versions (from -> to), when and the Dagster run. Read from `<CT_HOME>/audit/`; the
rows are `governance.history`'s, as the `audit_history` asset shows them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ct_platform.governance.audit import AuditEvent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the events as a JSON list (every field) instead of a table",
    )


def run(args: argparse.Namespace) -> int:
    from ct_platform.governance.audit import AuditLogError, read_events

    try:
        events = read_events()
    except (AuditLogError, OSError) as error:
        print(f"ct history: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([asdict(event) for event in events], indent=2))
    elif not events:
        print("nothing recorded yet: no promotion, approval, deployment or rollback")
    else:
        print(render(events))
    return 0


def render(events: list[AuditEvent]) -> str:
    from ct_platform.governance.history import history_rows

    header = ("at", "event", "versions", "actor", "dagster run", "reason")
    rows = [
        (row.at, row.event, row.versions, row.actor, row.dagster_run_id[:8], row.reason)
        for row in history_rows(events)
    ]
    table = [header, *rows]
    # Every column padded to its widest cell, except the last (reasons run long).
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(row[i].ljust(width) for i, width in enumerate(widths)), row[-1]])
        for row in table
    )
