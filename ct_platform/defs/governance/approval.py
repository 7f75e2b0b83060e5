"""Manual approval in the Dagster UI: the `approve_candidate` job.

Dagster has no approval step of its own (dagster-io/dagster#11661, #14681). A candidate
waiting for approval shows on the `champion` asset as an observation ("waiting for approval
of version N"); a person launches `approve_candidate` from the Launchpad with
`{version, decision: approve|reject, reason, approver}`. The job records the decision on the
version and in the audit log and, on approval, promotes through the same `promote` as every
other path (`champion` moves at once under `deployment.strategy: direct`; under a progressive
strategy the version gets `canary` and its rollout moves `champion` when it completes), then
reports the `champion` materialization with what MLflow holds afterwards, so the bundle and
the endpoint (or the rollout) follow by automation as they do after a training run.
`ct approve` / `ct reject` launch it and print what the run did.
"""

from typing import TYPE_CHECKING, Literal

import dagster as dg
from pydantic import Field

from ct_platform.defs.resources import MlflowResource
from ct_platform.settings import Spec

if TYPE_CHECKING:
    from ct_platform.governance.approval import NotApproved
    from ct_platform.registry.mlflow_registry import ModelRegistry

APPROVAL_JOB = "approve_candidate"
CHAMPION = dg.AssetKey("champion")


class ApprovalConfig(dg.Config):
    version: int = Field(description="The model version waiting for approval.")
    decision: Literal["approve", "reject"] = Field(description="approve or reject (final).")
    reason: str = Field(description="Why: recorded on the version and in the audit log.")
    approver: str = Field(description="Who decides: recorded with the decision.")


def not_approved_observation(
    context: dg.AssetExecutionContext, refusal: "NotApproved"
) -> dg.AssetObservation:
    """What the `champion` asset reports instead of a promotion: waiting, or rejected."""
    context.log.info(str(refusal))
    return _champion_status(refusal.version, str(refusal))


def _champion_status(version: int, status: str) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=CHAMPION,
        metadata={
            "status": dg.MetadataValue.text(status),
            "candidate_version": dg.MetadataValue.int(version),
        },
    )


def release_metadata(
    registry: "ModelRegistry", version: int, previous: int | None, spec: Spec
) -> dict[str, dg.MetadataValue]:
    """The `champion` asset's metadata after `promote` gave `version` the release alias
    (`previous`: the champion `promote` found), read back from MLflow: the aliases
    `version` holds, the serving champion and the strategy. Under `direct` the champion is
    `version` and `previous_version` the one it replaced; under a progressive strategy
    `canary_version` is the version holding `canary`, the champion is still the one that
    serves, and `promotion` says that `champion` moves only when the rollout completes."""
    from ct_platform.registry.versions import CANARY, release_alias
    from ct_platform.registry.versions import CHAMPION as CHAMPION_ALIAS

    champion = registry.alias_version(CHAMPION_ALIAS)
    serving = str(champion.version) if champion else "none"
    metadata = {
        "version": dg.MetadataValue.int(version),
        "aliases": dg.MetadataValue.text(",".join(sorted(registry.version(version).aliases))),
        "champion_version": dg.MetadataValue.text(serving),
        "strategy": dg.MetadataValue.text(spec.deployment.strategy),
    }
    if release_alias(spec) == CHAMPION_ALIAS:
        metadata["previous_version"] = dg.MetadataValue.text(str(previous or "none"))
        return metadata
    canary = registry.alias_version(CANARY)
    candidate = str(canary.version) if canary else "none"
    metadata["canary_version"] = dg.MetadataValue.text(candidate)
    metadata["promotion"] = dg.MetadataValue.text(
        f"waits for the {spec.deployment.strategy} rollout of version {candidate}: "
        f"`champion` stays version {serving} until the rollout completes"
    )
    return metadata


def build_approval_job(spec: Spec) -> dg.JobDefinition:
    @dg.op(description="Record a person's decision on a waiting candidate; promote it if approved.")
    def decide_candidate(
        context: dg.OpExecutionContext, config: ApprovalConfig, mlflow: MlflowResource
    ) -> None:
        from ct_platform.governance.approval import ApprovalError, decide
        from ct_platform.governance.lifecycle import StaleCandidate, promote_approved

        registry = mlflow.registry(spec)
        run_id = context.run.run_id
        try:
            event = decide(
                registry,
                config.version,
                config.decision,
                reason=config.reason,
                actor=config.approver,
                dagster_run_id=run_id,
            )
        except ApprovalError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None
        context.log.info(f"version {config.version}: {event.kind} by {event.actor}: {event.reason}")
        if config.decision == "reject":
            status = f"version {config.version} rejected by {config.approver}: {config.reason}"
            context.log_event(_champion_status(config.version, status))
            return
        try:
            previous = promote_approved(
                registry, config.version, spec, actor=config.approver, dagster_run_id=run_id
            )
        except StaleCandidate as stale:
            context.log.warning(str(stale))
            context.log_event(_champion_status(config.version, str(stale)))
            return
        context.log_event(
            dg.AssetMaterialization(
                asset_key=CHAMPION,
                metadata={
                    **release_metadata(registry, config.version, previous, spec),
                    "approved_by": dg.MetadataValue.text(config.approver),
                    "reason": dg.MetadataValue.text(config.reason),
                },
            )
        )

    @dg.job(
        name=APPROVAL_JOB,
        executor_def=dg.in_process_executor,
        description="Approve or reject a candidate waiting for approval (governance.approval: "
        "required). Config: version, decision (approve|reject), reason, approver. An approved "
        "candidate becomes champion at once (strategy direct) or `canary`, rolled out beside "
        "the champion (progressive strategies); a rejected one never becomes either.",
    )
    def approve_candidate() -> None:
        decide_candidate()

    return approve_candidate
