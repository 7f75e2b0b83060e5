"""`ct rollback [--reason ...] [--by NAME]`: the previous champion serves again, in one step.

Moves the MLflow alias `champion` back to the previous champion that passed its gates (from
the audit log; MLflow aliases keep no history), redeploys it to the spec's target and
records both in the audit log. Refuses, changing nothing, when there is no previous champion.

Exit status: 0 rolled back and serving; 1 refused or the deployment failed (the message says
which; after a failed deployment the alias has moved and the endpoint watchdog repairs it).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default="manual rollback", help="why (recorded)")
    parser.add_argument("--by", help="who rolls back (default: $USER)")


def run(args: argparse.Namespace) -> int:
    from ct_platform.deployment.endpoint import DeploymentError
    from ct_platform.deployment.export import default_registry
    from ct_platform.governance.audit import current_user
    from ct_platform.governance.lifecycle import RollbackRefused, rollback
    from ct_platform.settings import SpecError, load_spec

    try:
        spec = load_spec()
        registry = default_registry(spec)
        done = rollback(registry, spec, reason=args.reason, actor=args.by or current_user())
    except (RollbackRefused, SpecError) as error:
        print(f"ct rollback: {error}", file=sys.stderr)
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
