"""A per-process cache of read results, valid while the namespace's revision is unchanged.

Every commit bumps the namespace's revision counter, so a value computed from a snapshot
taken at revision R is exactly right for as long as the counter still reads R. A cached
read then costs one `GET` instead of reading, parsing and merging documents: config is
read far more often than it is written.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RevisionCache(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[K, tuple[int, V]] = OrderedDict()

    def get(self, key: K, revision: int) -> V | None:
        """The value cached for `key` if it was computed at `revision`."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != revision:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, revision: int, value: V) -> None:
        self._entries[key] = (revision, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def get_or_build(self, key: K, revision: int, build: Callable[[], V]) -> V:
        """The value cached for `key` at `revision`, or `build()`'s result, cached for next time."""
        value = self.get(key, revision)
        if value is None:
            value = build()
            self.put(key, revision, value)
        return value
