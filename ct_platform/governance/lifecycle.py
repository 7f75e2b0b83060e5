"""Champion moves a person makes (promotion after approval, rollback) and their audit lines.

`training.promotion.promote` records every automatic promotion through `record_promotion`;
the deployed endpoint records each deployment through `record_deployment`. `rollback` moves
`champion` back to the previous champion that passed its gates and redeploys it, in one
step: the previous champion comes from the audit log (MLflow aliases keep no history), or,
when the log has none, from the newest older version whose gates passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ct_platform.governance.approval import (
    APPROVAL_REASON_TAG,
    APPROVAL_TAG,
    APPROVED,
    APPROVED_BY_TAG,
    REJECTED,
    decision_tags,
)
from ct_platform.governance.audit import AUTOMATION, AuditEvent, append_event, champion_history
from ct_platform.governance.audit import read_events as read_audit_events
from ct_platform.registry.versions import CHAMPION, release_alias
from ct_platform.settings import Spec
from ct_platform.training.promotion import GATES_PASSED_TAG

if TYPE_CHECKING:
    from ct_platform.deployment.endpoint import Endpoint
    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.registry.versions import ModelVersionInfo


class RollbackRefused(RuntimeError):
    """There is nothing to roll back to (the message says why); nothing was changed."""


class StaleCandidate(RuntimeError):
    """An approved version older than the champion: recorded, but not promoted over it."""


@dataclass(frozen=True)
class Rollback:
    from_version: int
    to_version: int
    endpoint: Endpoint
    # Empty, or why the drift reference still describes the rolled-back version's data.
    note: str = ""


def record_promotion(
    registry: ModelRegistry,
    previous: ModelVersionInfo | None,
    promoted: ModelVersionInfo,
    *,
    actor: str = AUTOMATION,
    dagster_run_id: str | None = None,
    how: str = "",
) -> AuditEvent | None:
    """Record `promoted` becoming champion; nothing when it already was (a rerun). `how`:
    the path that moved it, when not a gated promotion alone ("canary completed ...")."""
    if previous is not None and previous.version == promoted.version:
        return None
    tags = decision_tags(registry, promoted)
    reason = "every blocking gate passed"
    if tags.get(APPROVAL_TAG) == APPROVED:
        reason += f"; approved by {tags.get(APPROVED_BY_TAG)}: {tags.get(APPROVAL_REASON_TAG)}"
    if how:
        reason += f"; {how}"
    return append_event(
        AuditEvent(
            kind="promotion",
            model=registry.model_name,
            actor=actor,
            reason=reason,
            from_version=previous.version if previous else None,
            to_version=promoted.version,
            dagster_run_id=dagster_run_id,
        )
    )


def move_champion(
    registry: ModelRegistry,
    version: int,
    *,
    actor: str,
    how: str,
    dagster_run_id: str | None = None,
) -> ModelVersionInfo | None:
    """Point `champion` at `version` and write its promotion line (the version, the previous
    champion, `actor`, `how` in the reason); nothing is written when it already was. The
    paths that move `champion` outside `training.promotion.promote` (a rollout completing
    or switching, a first deployment under a progressive strategy) go through here, so no
    move goes unrecorded: the log is the champion history `ct rollback` reads.

    Returns the previous champion (None: there was none).
    """
    previous = registry.alias_version(CHAMPION)
    registry.set_alias(CHAMPION, version)
    record_promotion(
        registry,
        previous,
        registry.version(version),
        actor=actor,
        dagster_run_id=dagster_run_id,
        how=how,
    )
    return previous


def record_deployment(
    model: str,
    version: int,
    where: str,
    *,
    actor: str = AUTOMATION,
    reason: str = "the champion's bundle changed",
    dagster_run_id: str | None = None,
    from_version: int | None = None,
) -> AuditEvent:
    """One deployment. `from_version`: the version serving before it, when the caller knows
    (a rollout knows its stable version); else what the previous recorded deployment served."""
    if from_version is None:
        deployed = [e for e in read_audit_events() if e.kind == "deployment" and e.model == model]
        from_version = deployed[-1].to_version if deployed else None
    return append_event(
        AuditEvent(
            kind="deployment",
            model=model,
            actor=actor,
            reason=f"{reason} ({where})",
            from_version=from_version,
            to_version=version,
            dagster_run_id=dagster_run_id,
        )
    )


def promote_approved(
    registry: ModelRegistry,
    version: int,
    spec: Spec,
    *,
    actor: str,
    dagster_run_id: str | None = None,
) -> int | None:
    """Promote an approved version (the approval job, `ct approve`); the previous champion.

    Goes through `promote` like every promotion, then moves the drift reference to the new
    champion's own training set, as the `champion` asset does.

    Raises:
        StaleCandidate: the champion is already a newer version (it stays).
    """
    from ct_platform.training.promotion import promote

    champion = registry.alias_version(CHAMPION)
    if champion is not None and champion.version > version:
        raise StaleCandidate(
            f"version {version} is approved but not promoted: the champion is already "
            f"version {champion.version}, a newer one (use `ct rollback` to go back)"
        )
    previous = promote(registry, version, spec, actor=actor, dagster_run_id=dagster_run_id)
    if release_alias(spec) == CHAMPION:  # else its rollout moves the reference on completion
        follow_drift_reference(registry.version(version), spec)
    return previous


def follow_drift_reference(info: ModelVersionInfo, spec: Spec) -> None:
    """Point the drift reference at `info`'s own training set (found by its fingerprint)."""
    from ct_platform.monitoring.champion_reference import save_champion_reference
    from ct_platform.settings import Paths
    from ct_platform.training.datasets import load_training_set

    paths = Paths.from_env()
    metric = info.metrics.get(f"holdout_{spec.evaluation.primary_metric}", math.nan)
    training_set = load_training_set(info.fingerprint, paths)
    # A whole-window refit learned from train and holdout; a holdout fit from train only.
    learned = training_set.window_path if info.is_refit else training_set.train_path
    save_champion_reference(learned, info.version, metric, spec, paths)


def previous_champion(registry: ModelRegistry, current: int) -> ModelVersionInfo:
    """The champion before `current` that passed its gates and was never rejected.

    Raises:
        RollbackRefused: no such version.
    """
    history = champion_history(read_audit_events(), registry.model_name)
    earlier = [v for v in reversed(history) if v != current]
    source = "the audit log"
    if not history:  # nothing recorded yet (e.g. promoted before the log existed)
        earlier = [v.version for v in reversed(registry.versions()) if v.version < current]
        source = f"MLflow versions older than {current}"
    for version in earlier:
        info = registry.version(version)
        if info.tags.get(GATES_PASSED_TAG) == "true" and not _rejected(registry, info):
            return info
    raise RollbackRefused(
        f"no previous champion of '{registry.model_name}' to roll back to: {source} lists no "
        f"version other than {current} that passed its gates; the champion stays "
        f"version {current}"
    )


def rollback(
    registry: ModelRegistry,
    spec: Spec,
    *,
    reason: str,
    actor: str,
) -> Rollback:
    """Move `champion` to the previous champion, redeploy it, and record both steps.

    Redeploys with `deployment.rollout.roll_out` (export, deploy, smoke request).

    Raises:
        RollbackRefused: no champion yet, or no previous champion that passed its gates.
    """
    from ct_platform.deployment.rollout import roll_out

    current = registry.alias_version(CHAMPION)
    if current is None:
        raise RollbackRefused(f"model '{registry.model_name}' has no champion to roll back")
    target = previous_champion(registry, current.version)
    registry.set_alias(CHAMPION, target.version)
    append_event(
        AuditEvent(
            kind="rollback",
            model=registry.model_name,
            actor=actor,
            reason=reason,
            from_version=current.version,
            to_version=target.version,
        )
    )
    endpoint = roll_out(spec, registry, actor=actor)
    record_deployment(
        registry.model_name,
        int(endpoint.version),
        f"{endpoint.target} {endpoint.url}",
        actor=actor,
        reason=f"rollback from version {current.version}",
    )
    return Rollback(
        current.version, target.version, endpoint, _follow_reference_if_kept(target, spec)
    )


def _follow_reference_if_kept(info: ModelVersionInfo, spec: Spec) -> str:
    """Move the drift reference; "" if done, else why not (the rollback stands either way)."""
    from ct_platform.training.datasets import MissingTrainingSet

    try:
        follow_drift_reference(info, spec)
    except MissingTrainingSet as missing:
        return f"drift reference not moved: {missing}"
    return ""


def _rejected(registry: ModelRegistry, info: ModelVersionInfo) -> bool:
    return decision_tags(registry, info).get(APPROVAL_TAG) == REJECTED
