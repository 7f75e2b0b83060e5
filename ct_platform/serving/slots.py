"""Model slots (stable, candidate, previous stable), traffic routing and hot swap.

The whole arrangement is one immutable `SlotState`; every change builds a new one and
swaps the reference. A request reads the reference once and scores with the models it
found, so a swap never affects a request in flight, and an old model stays alive (by
reference) until its last request is done. The previous stable stays loaded, so a
rollback is just another swap.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

from ct_platform.serving.bundle import LoadedModel
from ct_platform.serving.config import OutOfContract, UnknownColumns
from ct_platform.serving.feedback import LabelRule
from ct_platform.serving.schema import InputSchema

SLOT_NAMES = ("stable", "candidate")
_HASH_SPACE = 10_000


class SlotError(ValueError):
    """An admin operation that cannot apply to the current slots (the message says why)."""


@dataclass(frozen=True)
class ServedModel:
    """A loaded bundle with its request parser and label rule (built once, at load time)."""

    model: LoadedModel
    schema: InputSchema
    label_rule: LabelRule

    @classmethod
    def of(
        cls,
        model: LoadedModel,
        out_of_contract: OutOfContract = "reject",
        unknown_columns: UnknownColumns = "ignore",
        max_rows: int | None = None,
    ) -> ServedModel:
        """`model` with its parser; `out_of_contract`: what to do with values outside the
        data contract, `unknown_columns`: with columns outside it, `max_rows`: the rows a
        request may hold (see `serving.schema`)."""
        schema = InputSchema(model.meta.columns, out_of_contract, unknown_columns, max_rows)
        return cls(model=model, schema=schema, label_rule=LabelRule.of(model.meta))

    @property
    def version(self) -> str:
        return self.model.meta.version

    def describe(self) -> dict[str, object]:
        meta = self.model.meta
        return {
            "name": meta.name,
            "version": meta.version,
            "semver": meta.semver,
            "fingerprint": meta.fingerprint,
            "backend": self.model.backend_name,
            "bundle": str(self.model.directory),
        }


@dataclass(frozen=True)
class Route:
    slot: str
    served: ServedModel
    # Scores a copy of the request after the answer is sent; its output is only logged.
    shadow: ServedModel | None


@dataclass(frozen=True)
class SlotState:
    stable: ServedModel
    candidate: ServedModel | None = None
    previous: ServedModel | None = None
    # Share of requests the candidate answers, 0..1 (ignored in shadow mode).
    candidate_weight: float = 0.0
    shadow: bool = False
    # The routes a request can take, made once per state, not per request.
    _to_stable: Route = field(init=False, repr=False, compare=False)
    _to_candidate: Route | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        candidate = self.candidate
        shadowed_by = candidate if self.shadow else None
        to_candidate = Route("candidate", candidate, None) if candidate is not None else None
        object.__setattr__(self, "_to_stable", Route("stable", self.stable, shadowed_by))
        object.__setattr__(self, "_to_candidate", to_candidate)

    def route(self, key: str) -> Route:
        """Sticky: the same key always lands in the same slot for a given weight. In
        shadow mode stable answers everything and the candidate scores a copy."""
        to_candidate = self._to_candidate
        if to_candidate is None or self.shadow:
            return self._to_stable
        if _bucket(key) < self.candidate_weight * _HASH_SPACE:
            return to_candidate
        return self._to_stable

    def answering(self) -> list[Route]:
        """The slots that answer clients: stable, and the candidate while it takes a share
        of requests (not in shadow mode, where it only scores copies)."""
        to_candidate = self._to_candidate
        if to_candidate is None or self.shadow or self.candidate_weight == 0:
            return [self._to_stable]
        return [self._to_stable, to_candidate]

    def route_to_version(self, version: str) -> Route:
        """The route of the answering slot that serves `version` (a versioned V2 request).

        Raises:
            LookupError: no answering slot serves it; the message names those that do.
        """
        routes = self.answering()
        for route in routes:
            if route.served.version == version:
                return route
        served = " and ".join(f"version {r.served.version} ({r.slot})" for r in routes)
        raise LookupError(
            f"version '{version}' is not served here: this server answers with {served}"
        )

    def load(self, slot: str, served: ServedModel) -> SlotState:
        if slot == "stable":
            return replace(self, stable=served, previous=self.stable)
        if slot == "candidate":
            return replace(self, candidate=served)
        raise SlotError(f"unknown slot '{slot}' (expected one of {list(SLOT_NAMES)})")

    def unload_candidate(self) -> SlotState:
        return replace(self, candidate=None, candidate_weight=0.0, shadow=False)

    def set_routing(self, *, candidate_weight: float, shadow: bool) -> SlotState:
        if not 0.0 <= candidate_weight <= 1.0:
            raise SlotError(f"candidate_weight must be between 0 and 1, got {candidate_weight}")
        if self.candidate is None and (candidate_weight > 0 or shadow):
            raise SlotError("no candidate loaded: load one before routing traffic to it")
        return replace(self, candidate_weight=candidate_weight, shadow=shadow)

    def promote(self) -> SlotState:
        if self.candidate is None:
            raise SlotError("no candidate loaded: nothing to promote")
        return SlotState(stable=self.candidate, previous=self.stable)

    def rollback(self) -> SlotState:
        if self.previous is None:
            raise SlotError("no previous stable model: nothing to roll back to")
        return replace(self, stable=self.previous, previous=self.stable)

    def describe(self) -> dict[str, object]:
        return {
            "stable": self.stable.describe(),
            "candidate": self.candidate.describe() if self.candidate else None,
            "previous": self.previous.describe() if self.previous else None,
            "candidate_weight": self.candidate_weight,
            "shadow": self.shadow,
        }


def _bucket(key: str) -> int:
    # crc32 is stable across processes and restarts (unlike hash()), and cheap.
    return zlib.crc32(key.encode()) % _HASH_SPACE
