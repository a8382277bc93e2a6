"""What this replica knows of each namespace's latest revision, for CACHED reads.

A STRONG read asks Redis for the namespace's revision counter on every call: that is
what makes it see writes acknowledged by any replica. A CACHED read asks this view
instead. The view learns a revision from such a read of the counter and forgets it when
the namespace changes: at once for a write this replica commits, and when the wake-up
that every commit publishes arrives for writes of other replicas. While the replica is
not subscribed to the wake-ups (starting, or reconnecting to Redis) the view knows
nothing and every read goes to Redis.

A read of the counter that raced with a change is not remembered: each namespace carries
an epoch that every change bumps, and a value is kept only if the epoch it was read
under still holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable


class RevisionView:
    def __init__(self, read: Callable[[str], Awaitable[int]], size: int = 65536) -> None:
        self._read = read  # the counter in Redis
        self._size = size
        self._known: dict[str, int] = {}
        self._epochs: dict[str, int] = {}
        self._generation = 0  # bumped whenever the subscription starts or ends
        self._live = False

    async def revision(self, ns: str) -> int:
        if self._live:
            known = self._known.get(ns)
            if known is not None:
                return known
        generation, epoch = self._generation, self._epochs.get(ns, 0)
        revision = await self._read(ns)
        if self._live and generation == self._generation and epoch == self._epochs.get(ns, 0):
            if len(self._known) >= self._size:
                self._known.clear()  # cheap and rare: the view refills from reads
            self._known[ns] = revision
        return revision

    def changed(self, ns: str) -> None:
        """`ns` has a new revision (committed here, or a wake-up from another replica)."""
        self._known.pop(ns, None)
        self._epochs[ns] = self._epochs.get(ns, 0) + 1
        if len(self._epochs) > self._size:
            self._epochs.clear()
            self._generation += 1  # reads in flight under the old epochs are not kept

    def subscribed(self, live: bool) -> None:
        """The wake-up subscription started (`live`) or was lost: forget everything either way."""
        self._known.clear()
        self._epochs.clear()
        self._generation += 1
        self._live = live
