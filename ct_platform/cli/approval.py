"""`ct approve VERSION --reason ...` / `ct reject VERSION --reason ...` [--by NAME].

Launches the `approve_candidate` job on the platform's Dagster instance, resolved as every
`ct` command does (`cli.where`: `DAGSTER_HOME`, else `$CT_HOME/dagster`), exactly what the
Launchpad does: the decision is recorded on the MLflow version and in the
audit log with who (`--by`, else $USER), when and why. An approved candidate becomes
champion under `deployment.strategy: direct`, or `canary` under a progressive strategy (its
rollout moves `champion` when it completes); the answer says which, read back from MLflow
after the run, and, when another version's rollout is active, names that rollout and says
the approved version's rollout starts after it ends. The bundle and endpoint follow by
automation. Decisions are final.

Exit status: 0 when the decision was recorded, 1 when it was refused (the message says why),
2 when the platform could not be reached (an invalid spec, no Dagster instance where
`DAGSTER_HOME` or its default points, an instance whose runs ran on another CT_HOME or
model: the message names the folder, spec and CT_HOME).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ct_platform.settings import Spec

VERBS = {"approve": "approve", "reject": "reject"}
# The job runs in this process: its console logger would print every event (and, for a
# refusal, the step failure with its stack trace) before the one-line answer, which this
# command prints itself. Every event is still stored in the instance (the run's page in the
# Dagster UI shows them all, the trace of a failure included).
QUIET_LOGGERS = {"console": {"config": {"log_level": "CRITICAL"}}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", type=int, help="the model version waiting for approval")
    parser.add_argument("--reason", required=True, help="why (recorded with the decision)")
    parser.add_argument("--by", help="who decides (default: $USER)")


def run(args: argparse.Namespace) -> int:
    import dagster as dg

    from ct_platform.cli.where import (
        OtherPlatformError,
        check_same_platform,
        dagster_home,
        load_platform,
    )
    from ct_platform.definitions import build_definitions
    from ct_platform.defs.governance.approval import APPROVAL_JOB
    from ct_platform.governance.audit import current_user

    command = f"ct {args.command}"
    try:
        platform = load_platform()  # an invalid spec is refused before anything else
        dagster_home(platform)
    except ValueError as error:  # SpecError, NoInstanceError
        print(f"{command}: {error}", file=sys.stderr)
        return 2
    spec = platform.spec
    config = {
        "version": args.version,
        "decision": VERBS[args.command],
        "reason": args.reason,
        "approver": args.by or current_user(),
    }
    job = build_definitions(spec).resolve_job_def(APPROVAL_JOB)
    with dg.DagsterInstance.get() as instance:
        try:
            check_same_platform(platform, instance)
        except OtherPlatformError as error:
            print(f"{command}: {error}", file=sys.stderr)
            return 2
        result = job.execute_in_process(
            run_config={"ops": {"decide_candidate": {"config": config}}, "loggers": QUIET_LOGGERS},
            instance=instance,
            raise_on_error=False,
        )
    if not result.success:
        print(f"{command}: {_failure(result)}", file=sys.stderr)
        return 1
    print(_outcome(result, config))
    if args.command == "approve":
        waits = _waits_for_another_rollout(spec, args.version)
        if waits:
            print(f"{command}: {waits}")
    return 0


def _waits_for_another_rollout(spec: Spec, version: int) -> str:
    """ "" unless `version` got `canary` while another version's rollout is active: then
    what happens to it, naming that rollout (it is never cut short for the new one)."""
    from ct_platform.deployment.controller import active_rollout
    from ct_platform.deployment.export import default_registry
    from ct_platform.deployment.rollout import queued_behind
    from ct_platform.registry.versions import CANARY

    current = active_rollout(spec)
    if current is None or current.version == str(version):
        return ""
    canary = default_registry(spec).alias_version(CANARY)
    if canary is None or canary.version != version:
        return ""
    return f"another rollout is active: {queued_behind(current, version)}"


def _failure(result: object) -> str:
    for event in result.get_step_failure_events():  # type: ignore[attr-defined]
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return data.user_failure_data.description
        return data.error.message.strip() if data.error else "the approval run failed"
    return "the approval run failed"


def _outcome(result: object, config: dict[str, object]) -> str:
    """What the run did, as its `champion` materialization (aliases read back from MLflow
    after the promotion) or observation (the status it observed) reports it."""
    run_id = result.run_id  # type: ignore[attr-defined]
    for event in result.all_events:  # type: ignore[attr-defined]
        if event.is_step_materialization:
            metadata = event.step_materialization_data.materialization.metadata
            facts = {key: value.value for key, value in metadata.items()}
            decided = f"version {config['version']} approved by {config['approver']}"
            return f"{decided}: {release_outcome(facts)} (Dagster run {run_id})"
        if event.event_type_value == "ASSET_OBSERVATION":
            observation = event.event_specific_data.asset_observation
            return f"{observation.metadata['status'].value} (Dagster run {run_id})"
    return f"version {config['version']}: {config['decision']} recorded (Dagster run {run_id})"


def release_outcome(facts: dict[str, object]) -> str:
    """Where a promoted version stands, from the approval run's `champion` materialization
    metadata (`version`, `previous_version`, `aliases`, `champion_version`, `strategy`):
    e.g. "rollout of version 9 pending (ab): it holds `canary` ...; champion stays version 2
    until the rollout completes"."""
    version, champion = facts["version"], facts["champion_version"]
    aliases = str(facts["aliases"]).split(",")
    if champion == str(version):
        return f"champion version {facts['previous_version']} -> {version}"
    if "canary" not in aliases:  # neither: say what MLflow holds rather than guess
        return f"version {version} holds {facts['aliases'] or 'no alias'}; champion is {champion}"
    strategy = facts["strategy"]
    if champion == "none":
        return (
            f"version {version} holds `canary` ({strategy}); nothing is champion yet, so its "
            "first deployment (deployed_endpoint) makes it champion directly"
        )
    return (
        f"rollout of version {version} pending ({strategy}): it holds `canary` and its rollout "
        f"starts when deployed_endpoint next runs; champion stays version {champion} until "
        "the rollout completes"
    )
