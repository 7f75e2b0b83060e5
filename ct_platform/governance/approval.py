"""Manual approval: with `governance.approval: required`, a person decides before promotion.

A candidate that passed its gates waits: `training.promotion.promote` (every path to the
`champion` alias goes through it: the `champion` asset, its automation, reruns, the approval
job) calls `require_approval`, which raises `AwaitingApproval` until a person approved the
version and `CandidateRejected` once a person rejected it. A decision is final and is
recorded on the model version (tags below: who, when, why, which Dagster run) and in the
audit log. Dagster has no approval step of its own (dagster-io/dagster#11661, #14681); the
`approve_candidate` job and `ct approve` / `ct reject` both call `decide` here.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from ct_platform.governance.audit import AUTOMATION, AuditEvent, append_event, audit_path
from ct_platform.registry.versions import CHAMPION
from ct_platform.settings import GovernanceSpec
from ct_platform.training.promotion import GATES_PASSED_TAG

if TYPE_CHECKING:
    from ct_platform.registry.mlflow_registry import ModelRegistry
    from ct_platform.registry.versions import ModelVersionInfo

APPROVAL_TAG = "ct.approval"  # pending | approved | rejected
APPROVED_BY_TAG = "ct.approval.by"
APPROVED_AT_TAG = "ct.approval.at"
APPROVAL_REASON_TAG = "ct.approval.reason"
APPROVAL_RUN_TAG = "ct.approval.dagster_run_id"
# Set by the promotion step on a version refit from an evaluated candidate: approving the
# candidate approves its refit, and the other way round.
REFIT_OF_TAG = "ct.refit_of"
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
Decision = Literal["approve", "reject"]
DECISIONS: dict[str, str] = {"approve": APPROVED, "reject": REJECTED}


class ApprovalError(ValueError):
    """A decision that cannot be taken (unknown version, failed gates, already decided)."""


class NotApproved(RuntimeError):
    """The version may not be promoted yet (or ever): the champion alias stays."""

    def __init__(self, version: int, message: str) -> None:
        super().__init__(message)
        self.version = version


class AwaitingApproval(NotApproved):
    def __init__(self, version: int) -> None:
        super().__init__(
            version,
            f"waiting for approval of version {version} (ct approve {version} --reason ..., "
            f"or launch the approve_candidate job); the champion stays",
        )


class CandidateRejected(NotApproved):
    def __init__(self, version: int, tags: dict[str, str]) -> None:
        super().__init__(
            version,
            f"version {version} was rejected by {tags.get(APPROVED_BY_TAG, '?')} at "
            f"{tags.get(APPROVED_AT_TAG, '?')}: {tags.get(APPROVAL_REASON_TAG, '')}; "
            "it never becomes champion",
        )


def decision_tags(
    registry: ModelRegistry, info: ModelVersionInfo, refitted: ModelVersionInfo | None = None
) -> dict[str, str]:
    """The approval tags that apply to `info`: its own, else those of the version it refits
    (`refitted`, when the caller has read it already; else read here)."""
    if APPROVAL_TAG in info.tags and info.tags[APPROVAL_TAG] != PENDING:
        return info.tags
    refit_of = info.tags.get(REFIT_OF_TAG)
    if refit_of:
        found = refitted if refitted and refitted.version == int(refit_of) else None
        original = (found or registry.version(int(refit_of))).tags
        if original.get(APPROVAL_TAG, PENDING) != PENDING:
            return original
    return info.tags


def require_approval(
    registry: ModelRegistry,
    info: ModelVersionInfo,
    governance: GovernanceSpec,
    *,
    actor: str = AUTOMATION,
    dagster_run_id: str | None = None,
) -> None:
    """Return if `info` may be promoted; else mark it pending (once) and raise.

    `actor` (who or what started the promoting run) is recorded with the approval request.

    Raises:
        AwaitingApproval: approval is required and nobody has decided yet.
        CandidateRejected: a person rejected it (whatever the policy is now).
    """
    tags = decision_tags(registry, info)
    state = tags.get(APPROVAL_TAG)
    if state == REJECTED:
        raise CandidateRejected(info.version, tags)
    if governance.approval == "none" or state == APPROVED:
        return
    if state is None:
        _mark_pending(registry, info, actor, dagster_run_id)
    raise AwaitingApproval(info.version)


def _mark_pending(
    registry: ModelRegistry, info: ModelVersionInfo, actor: str, dagster_run_id: str | None
) -> None:
    with _decision_lock():
        if APPROVAL_TAG in registry.version(info.version).tags:
            return  # another run marked it first: one request in the log
        registry.set_tags(info.version, {APPROVAL_TAG: PENDING})
        champion = _champion_version(registry)
        append_event(
            AuditEvent(
                kind="approval_requested",
                model=registry.model_name,
                actor=actor,
                reason="passed its gates; the spec requires a person's approval"
                + ("" if champion else "; no champion yet"),
                from_version=champion,
                to_version=info.version,
                dagster_run_id=dagster_run_id,
            )
        )


def _champion_version(registry: ModelRegistry) -> int | None:
    """The serving champion now: the version an approval request or decision is made over."""
    champion = registry.alias_version(CHAMPION)
    return champion.version if champion else None


def decide(
    registry: ModelRegistry,
    version: int,
    decision: str,
    *,
    reason: str,
    actor: str,
    dagster_run_id: str | None = None,
) -> AuditEvent:
    """Record a person's final decision on `version`; the audit event written.

    Raises:
        ApprovalError: unknown decision, empty reason or actor, no such version, a version
            whose blocking gates did not pass (an approval never overrides a gate), a
            version already decided (decisions are final), or one not waiting for a decision.
    """
    if decision not in DECISIONS:
        raise ApprovalError(f"decision {decision!r} must be one of {sorted(DECISIONS)}")
    if not reason.strip():
        raise ApprovalError("a decision needs a reason (--reason / config `reason`)")
    if not actor.strip():
        raise ApprovalError("a decision needs the approver's name (--by / config `approver`)")
    with _decision_lock():
        info = _existing_version(registry, version)
        _check_decidable(info, decision)
        _check_waiting(info, registry)
        at = datetime.now(UTC).isoformat(timespec="seconds")
        tags = {
            APPROVAL_TAG: DECISIONS[decision],
            APPROVED_BY_TAG: actor,
            APPROVED_AT_TAG: at,
            APPROVAL_REASON_TAG: reason,
        }
        if dagster_run_id:
            tags[APPROVAL_RUN_TAG] = dagster_run_id
        registry.set_tags(version, tags)
        if decision == "reject":  # it never becomes champion: no longer a challenger
            registry.drop_challenger(version)
        return append_event(
            AuditEvent(
                kind="approval" if decision == "approve" else "rejection",
                model=registry.model_name,
                actor=actor,
                reason=reason,
                from_version=_champion_version(registry),
                to_version=version,
                dagster_run_id=dagster_run_id,
                at=at,
            )
        )


def pending_versions(registry: ModelRegistry) -> list[ModelVersionInfo]:
    """Versions waiting for a decision, oldest first."""
    return [v for v in registry.versions() if v.tags.get(APPROVAL_TAG) == PENDING]


def _existing_version(registry: ModelRegistry, version: int) -> ModelVersionInfo:
    known = {v.version: v for v in registry.versions()}
    if version not in known:
        listed = ", ".join(str(v) for v in sorted(known)) or "none"
        raise ApprovalError(
            f"model '{registry.model_name}' has no version {version} (versions: {listed})"
        )
    return known[version]


def _check_decidable(info: ModelVersionInfo, decision: str) -> None:
    state = info.tags.get(APPROVAL_TAG)
    if state in (APPROVED, REJECTED):
        raise ApprovalError(
            f"version {info.version} was already {state} by {info.tags.get(APPROVED_BY_TAG)} "
            f"at {info.tags.get(APPROVED_AT_TAG)} ({info.tags.get(APPROVAL_REASON_TAG)}): "
            "decisions are final"
        )
    gates = info.tags.get(GATES_PASSED_TAG)
    if decision == "approve" and gates != "true":
        raise ApprovalError(
            f"version {info.version} cannot be approved: its blocking gates did not pass "
            f"({GATES_PASSED_TAG}={gates!r}); an approval never overrides a gate"
        )


def _check_waiting(info: ModelVersionInfo, registry: ModelRegistry) -> None:
    """Only a version waiting for a person is decided: deciding another one (its holdout fit,
    a former champion) would approve what nobody reviewed, or silently bar a rollback."""
    if info.tags.get(APPROVAL_TAG) == PENDING:
        return
    waiting = ", ".join(str(v.version) for v in pending_versions(registry)) or "none"
    raise ApprovalError(
        f"version {info.version} is not waiting for approval ({APPROVAL_TAG} is not "
        f"'{PENDING}'); versions waiting: {waiting}"
    )


@contextmanager
def _decision_lock() -> Iterator[None]:
    """One decision at a time: check-then-tag must not race another decider."""
    lock_file = audit_path().with_name("approval.lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
