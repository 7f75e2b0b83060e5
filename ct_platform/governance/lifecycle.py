"""Champion moves a person makes (promotion after approval, rollback) and their audit lines.

`training.promotion.promote` records every automatic promotion with a `promotion_event`
built before the alias moves and appended right after it (its MLflow reads in between let a
deployer that saw the new alias write its deployment line first, a second before its cause);
`deployment.rollout.roll_out` and the rollout controller record each deployment they make
through `record_deployment`, with what they compared and found. `rollback` moves
`champion` back to the previous champion that passed its gates and redeploys it, in one
step: the previous champion comes from the audit log (MLflow aliases keep no history), or,
when the log has none, from the newest older version whose gates passed. Every one of
these moves `champion` through `set_champion`, which moves the drift reference with it.
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
from ct_platform.governance.audit import (
    AUTOMATION,
    AuditEvent,
    ChampionHistory,
    append_event,
    replay_champions,
)
from ct_platform.governance.audit import read_events as read_audit_events
from ct_platform.registry.versions import CHAMPION
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


def promotion_event(
    registry: ModelRegistry,
    previous: ModelVersionInfo | None,
    promoted: ModelVersionInfo,
    *,
    actor: str = AUTOMATION,
    dagster_run_id: str | None = None,
    how: str = "",
) -> AuditEvent | None:
    """The line of `promoted` becoming champion, to append once the alias moved; None when it
    already was (a rerun). `how`: the path that moved it, when not a gated promotion alone
    ("canary completed ...")."""
    if previous is not None and previous.version == promoted.version:
        return None
    tags = decision_tags(registry, promoted)
    reason = "every blocking gate passed"
    if tags.get(APPROVAL_TAG) == APPROVED:
        reason += f"; approved by {tags.get(APPROVED_BY_TAG)}: {tags.get(APPROVAL_REASON_TAG)}"
    if how:
        reason += f"; {how}"
    return AuditEvent(
        kind="promotion",
        model=registry.model_name,
        actor=actor,
        reason=reason,
        from_version=previous.version if previous else None,
        to_version=promoted.version,
        dagster_run_id=dagster_run_id,
    )


def set_champion(
    registry: ModelRegistry, version: int, spec: Spec, event: AuditEvent | None = None
) -> str:
    """Point `champion` at `version` and the drift reference at that version's own training
    data. Every path that changes the serving champion (a gated promotion, a first
    deployment, a rollout completing or switching, a blue-green switch back, `ct rollback`)
    comes through here, so monitoring never judges live traffic against another version's
    data, nor against nothing while a champion serves.

    `event`: the move's promotion line (`promotion_event`, built before: its MLflow reads),
    appended right after the alias moves and before the reference is sketched, so a deployer
    seeing the new champion cannot log its deployment before the promotion that caused it.

    Returns "" when the reference moved, else why not (its training set is gone): the move
    stands either way, and the monitoring assets say loudly that they cannot judge.
    """
    registry._point_champion(version)
    if event is not None:
        append_event(event)
    return _follow_reference_if_kept(registry.version(version), spec)


def move_champion(
    registry: ModelRegistry,
    version: int,
    spec: Spec,
    *,
    actor: str,
    how: str,
    dagster_run_id: str | None = None,
) -> tuple[ModelVersionInfo | None, str]:
    """`set_champion` plus its promotion line (the version, the previous champion, `actor`,
    `how` in the reason); nothing is written when it already was. The paths that move
    `champion` outside `training.promotion.promote` (a rollout completing or switching, a
    first deployment under a progressive strategy) go through here, so no move goes
    unrecorded: the log is the champion history `ct rollback` reads.

    Returns the previous champion (None: there was none) and `set_champion`'s note.
    """
    previous = registry.alias_version(CHAMPION)
    event = promotion_event(
        registry,
        previous,
        registry.version(version),
        actor=actor,
        dagster_run_id=dagster_run_id,
        how=how,
    )
    return previous, set_champion(registry, version, spec, event)


def record_gate_rejection(
    model: str,
    version: int,
    champion: int | None,
    rejection: str,
    *,
    actor: str = AUTOMATION,
    dagster_run_id: str | None = None,
) -> AuditEvent | None:
    """Record `version` rejected by its blocking gates while `champion` serves (it stays).
    `rejection`: the outcome's own text, each failed gate with its figures. The verdict on a
    version is final, so nothing is written when the log has it already (a re-executed run
    judging the same version again)."""
    recorded = read_audit_events()
    if any(
        e.kind == "gate_rejection" and (e.model, e.to_version) == (model, version) for e in recorded
    ):
        return None
    return append_event(
        AuditEvent(
            kind="gate_rejection",
            model=model,
            actor=actor,
            reason=rejection.replace(":\n  ", ": ").replace("\n  ", "; "),
            from_version=champion,
            to_version=version,
            dagster_run_id=dagster_run_id,
        )
    )


def record_deployment(
    model: str,
    version: int,
    where: str,
    *,
    actor: str,
    reason: str,
    from_version: int | None,
    dagster_run_id: str | None = None,
) -> AuditEvent:
    """One deployment of `version` at `where` ("local http://..."). `reason`: what the
    deployer compared and found, never a guess; `from_version`: the version the server
    served before (None: nothing served), as the deployer saw it."""
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

    Goes through `promote` like every promotion (which moves the drift reference with
    `champion`; under a progressive strategy the rollout does when it completes).

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
    return promote(registry, version, spec, actor=actor, dagster_run_id=dagster_run_id)


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
        RollbackRefused: no such version; the message says what the champion history holds
            (versions rolled back from included) and why each earlier version does not qualify.
    """
    history = replay_champions(read_audit_events(), registry.model_name)
    if history.served:
        earlier = [v for v in reversed(history.served) if v != current]
    else:  # nothing recorded yet (e.g. promoted before the log existed)
        earlier = [v.version for v in reversed(registry.versions()) if v.version < current]
    unfit: list[str] = []
    for version in earlier:
        info = registry.version(version)
        why_not = _why_not_a_rollback_target(registry, info)
        if not why_not:
            return info
        unfit.append(f"version {version} {why_not}")
    raise RollbackRefused(_nothing_to_roll_back_to(registry.model_name, current, history, unfit))


def _why_not_a_rollback_target(registry: ModelRegistry, info: ModelVersionInfo) -> str:
    """ "" when `info` may serve again, else why not ("did not pass its gates (...)")."""
    verdict = info.tags.get(GATES_PASSED_TAG)
    if verdict != "true":
        return f"did not pass its gates ({GATES_PASSED_TAG}={verdict!r})"
    tags = decision_tags(registry, info)
    if tags.get(APPROVAL_TAG) == REJECTED:
        return f"was rejected by {tags.get(APPROVED_BY_TAG)}: {tags.get(APPROVAL_REASON_TAG)}"
    return ""


def _nothing_to_roll_back_to(
    model: str, current: int, history: ChampionHistory, unfit: list[str]
) -> str:
    """Why `ct rollback` has nowhere to go, from what the log and MLflow actually hold."""
    if history.served:
        served = ", ".join(str(v) for v in history.served)
        found = f"the audit log's champion history is [{served}] (oldest first)"
        if history.served[0] == current:
            found += f": version {current} is the first champion it records"
    else:
        found = f"the audit log records no champion, so MLflow's versions older than {current} "
        found += "were looked at" if unfit else "were looked at: there is none"
    left = [
        f"version {version} (rolled back by {event.actor} at {event.at}: {event.reason})"
        for version, event in history.left
    ]
    if left:
        found += "; already rolled back from, so never gone back to: " + "; ".join(left)
    if unfit:
        found += "; " + "; ".join(unfit)
    return (
        f"no previous champion of '{model}' to roll back to: {found}. The champion stays "
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
    note = set_champion(registry, target.version, spec)
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
    done = roll_out(spec, registry, actor=actor, why=f"rollback from version {current.version}")
    return Rollback(current.version, target.version, done.endpoint, note)


def follow_serving_champion(registry: ModelRegistry, spec: Spec) -> tuple[int | None, str]:
    """The champion's version (None: no champion yet) with its drift reference in place.

    A reference that describes another version or none (its store lost, a champion moved
    before references followed every move) is rebuilt from the champion's own training
    set. Returns "" as the note when the reference is the champion's, else why it cannot be.
    """
    from ct_platform.monitoring.champion_reference import load_champion_reference
    from ct_platform.settings import Paths

    champion = registry.alias_version(CHAMPION)
    if champion is None:
        return None, ""
    reference = load_champion_reference(Paths.from_env())
    if reference is not None and reference.version == champion.version:
        return champion.version, ""
    return champion.version, _follow_reference_if_kept(champion, spec)


def _follow_reference_if_kept(info: ModelVersionInfo, spec: Spec) -> str:
    """Move the drift reference; "" if done, else why not (the champion stays either way)."""
    from ct_platform.training.datasets import MissingTrainingSet

    try:
        follow_drift_reference(info, spec)
    except MissingTrainingSet as missing:
        return f"drift reference not moved to version {info.version}: {missing}"
    return ""
