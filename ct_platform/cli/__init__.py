"""`ct`: the command-line side of the platform.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only when their subcommand runs, so `ct --help` stays instant and
`ct serve` never pays for importing dagster or mlflow.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module under ct_platform.cli, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("simulate", "replay the dataset in time order as batches into the landing folder"),
    "serve": ("serve", "serve a model bundle (the champion's by default) over HTTP"),
    "drift": ("drift", "compare two data files for drift with the spec's column definitions"),
    "status": ("status", "show every landed batch: trained into which version, or why not"),
    "rollout": ("rollout", "see or steer the rollout: status|pause|resume|promote|abort"),
    "approve": ("approval", "approve a candidate waiting for approval; it becomes champion"),
    "reject": ("approval", "reject a candidate waiting for approval; it never becomes champion"),
    "history": ("history", "show the audit log: promotions, approvals, deployments, rollbacks"),
    "rollback": ("rollback", "move the champion back to the previous one and redeploy it"),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, str | None]:
    parser = argparse.ArgumentParser(prog="ct", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(f"ct_platform.cli.{module_name}").add_arguments(sub)
    return parser, chosen


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, chosen = build_parser(argv)
    args = parser.parse_args(argv)
    if chosen is None:
        parser.print_help()
        return 2
    # Every command reads the spec of the platform running on this CT_HOME (`cli.where`).
    importlib.import_module("ct_platform.cli.where").follow_running_spec()
    module = importlib.import_module(f"ct_platform.cli.{SUBCOMMANDS[chosen][0]}")
    try:
        return module.run(args)
    except BrokenPipeError:
        # `ct history | head`: the reader left; stop quietly as Unix tools do, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
