"""The newest request ids a server answered, in a ring of fixed size (plain Python).

Remembering an id stores it at the ring's next position, and the caller keeps what it
remembers of that request in its own preallocated lists at the same position: an id, an
interned slot name, a label rule are stored, and no container is allocated per request
(an `OrderedDict` of tuples made a tuple and a node per request). Memory is fixed: a list
of `limit` pointers plus a dict id -> position, and the callers' lists.
"""

from __future__ import annotations


class RecentIds:
    """Positions of the newest `limit` ids; an id seen again keeps only its newest one."""

    __slots__ = ("_ids", "_next", "_where")

    def __init__(self, limit: int) -> None:
        self._ids: list[str | None] = [None] * limit
        self._where: dict[str, int] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._where)

    def remember(self, request_id: str) -> int:
        """The position now holding `request_id`, forgetting the oldest id once `limit`
        are held."""
        position = self._next
        evicted = self._ids[position]
        # The evicted id may have been forgotten, or remembered again at a newer position.
        if evicted is not None and self._where.get(evicted) == position:
            del self._where[evicted]
        self._ids[position] = request_id
        self._where[request_id] = position
        self._next = position + 1 if position + 1 < len(self._ids) else 0
        return position

    def position(self, request_id: str) -> int | None:
        """Where `request_id` is held; None when it is not (or no longer) remembered."""
        return self._where.get(request_id)

    def forget(self, request_id: str) -> int | None:
        """Where `request_id` was held, if it was; it is not remembered any more."""
        position = self._where.pop(request_id, None)
        if position is not None:
            self._ids[position] = None
        return position
