"""The audit log as people read it: one row per event, in the words `ct history` prints and
the `audit_history` asset's table shows (this is the one formatter of both).

A row says what happened in words ("approval requested", not the log's `kind` identifier)
and which versions moved ("v2 -> v4"). A rollout's rollback (a candidate taken off the
traffic; `champion` never moved) reads "rollout rollback", "rollout of v4 rolled back;
champion v2 stays", not "v4 -> v2". Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ct_platform.governance.audit import AuditEvent, EventKind

# What each kind of event is called where people read the log.
EVENT_WORDS: dict[EventKind, str] = {
    "promotion": "promotion",
    "approval_requested": "approval requested",
    "approval": "approval",
    "rejection": "rejection",
    "deployment": "deployment",
    "rollback": "rollback",
}
ROLLOUT_ROLLBACK = "rollout rollback"
# Lines whose from-version is the champion at the time (`governance.approval`).
APPROVAL_KINDS = ("approval_requested", "approval", "rejection")


@dataclass(frozen=True)
class HistoryRow:
    """One audit event as read: `event` in words, `versions` as "v2 -> v4" (or a rollout's
    rollback spelled out); the other fields as the log holds them ("" for no run)."""

    at: str
    event: str
    versions: str
    model: str
    actor: str
    dagster_run_id: str
    reason: str


def history_rows(events: list[AuditEvent]) -> list[HistoryRow]:
    """The rows of `events` (oldest first, as `read_events` returns them), in that order."""
    return [
        HistoryRow(
            at=event.at,
            event=_event_words(event, champion),
            versions=_versions(event, champion),
            model=event.model,
            actor=event.actor,
            dagster_run_id=event.dagster_run_id or "",
            reason=event.reason,
        )
        for event, champion in zip(events, champions_before(events), strict=True)
    ]


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


def _is_rollout_rollback(event: AuditEvent, champion: int | None) -> bool:
    return event.kind == "rollback" and not rolls_back_champion(event, champion)


def _event_words(event: AuditEvent, champion: int | None) -> str:
    return ROLLOUT_ROLLBACK if _is_rollout_rollback(event, champion) else EVENT_WORDS[event.kind]


def _versions(event: AuditEvent, champion: int | None) -> str:
    old, new = _version(event.from_version), _version(event.to_version)
    if _is_rollout_rollback(event, champion):
        return f"rollout of {old} rolled back; champion {new} stays"
    return f"{old} -> {new}"


def _version(version: int | None) -> str:
    return "-" if version is None else f"v{version}"
