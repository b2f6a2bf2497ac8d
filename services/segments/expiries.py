"""When each profile's windows next move: the moment "ordered in the last 30 days" may stop
holding without any new event.

One entry per profile: a heap of (due, profile id) for the earliest first, and the live
due per profile beside it. A profile rescheduled leaves its old heap entry behind (heaps
cannot remove from the middle); such entries are skipped when they surface, and the heap
is rebuilt once they outnumber the live ones, so memory follows the number of profiles,
not the number of changes.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class ExpiryQueue:
    def __init__(self, entries: Iterable[tuple[str, float]] = ()):
        self._due: dict[str, float] = dict(entries)
        self._heap: list[tuple[float, str]] = []
        self._rebuild()

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, profile_id: str, due: float | None) -> None:
        """`due` None: nothing of the profile's will expire."""
        if due is None:
            self._due.pop(profile_id, None)
            return
        if self._due.get(profile_id) == due:
            return
        self._due[profile_id] = due
        heapq.heappush(self._heap, (due, profile_id))
        if len(self._heap) > 2 * len(self._due) + 1024:
            self._rebuild()

    def pop_due(self, now: float) -> set[str]:
        """The profiles due by `now`, no longer scheduled."""
        due: set[str] = set()
        while self._heap and self._heap[0][0] <= now:
            when, profile_id = heapq.heappop(self._heap)
            if self._due.get(profile_id) == when:
                del self._due[profile_id]
                due.add(profile_id)
        return due

    def forget(self, profile_ids: Iterable[str]) -> None:
        for profile_id in profile_ids:
            self._due.pop(profile_id, None)

    def _rebuild(self) -> None:
        self._heap = [(due, profile_id) for profile_id, due in self._due.items()]
        heapq.heapify(self._heap)
