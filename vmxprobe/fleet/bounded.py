"""State that stays bounded whatever the size of the fleet: capped lists of hosts,
counters with a cap on distinct keys, and a table of host names in 8 bytes a name."""

from __future__ import annotations

import bisect
from array import array

# Distinct values kept per grouping; the rest are counted under OTHER. Real fleets have
# a handful of revisions and CPU models; a cap keeps a hostile input from growing them.
MAX_GROUP_KEYS = 1000
OTHER = "(other)"


class Capped:
    """The first `limit` items by key, plus how many were offered (limit None: all)."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.count = 0
        self._items: list = []
        self._seq = 0

    def add(self, key, item) -> None:
        self.count += 1
        self._seq += 1
        entry = (key, self._seq, item)
        if self.limit is None:
            self._items.append(entry)
            return
        if len(self._items) >= self.limit:
            if not self._items or entry >= self._items[-1]:
                return
            bisect.insort(self._items, entry)
            self._items.pop()
        else:
            bisect.insort(self._items, entry)

    def items(self) -> list:
        if self.limit is None:
            self._items.sort(key=lambda e: (e[0], e[1]))
        return [e[2] for e in self._items]

    @property
    def cut(self) -> int:
        return self.count - len(self._items)

    def as_json(self, key="hosts") -> dict:
        return {"count": self.count, key: self.items(), "cut": self.cut}


class Counter:
    """Counts by key, at most MAX_GROUP_KEYS distinct keys (the rest under OTHER)."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.folded = 0  # distinct keys that went to OTHER (counted once each time seen)

    def add(self, key: str) -> None:
        counts = self.counts
        if key in counts:
            counts[key] += 1
        elif len(counts) < MAX_GROUP_KEYS:
            counts[key] = 1
        else:
            counts[OTHER] = counts.get(OTHER, 0) + 1
            self.folded += 1

    def ordered(self) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))


class NameSet:
    """Exact-enough duplicate detection in 8 bytes a name: an open-addressing table of
    63-bit hashes (collision odds at 10^6 names: ~1 in 10^7), the top bit marking a
    name already reported as a duplicate. A Python set of the names would cost ~100
    bytes each and make peak memory follow the fleet size."""

    _MARK = 1 << 63
    _LOW = _MARK - 1

    def __init__(self, size: int = 1 << 12):
        self._table = array("Q", bytes(8 * size))
        self._mask = size - 1
        self._used = 0

    def add(self, name: str) -> int:
        """0: first time; 1: seen once before (a new duplicate); 2: seen more often."""
        h = (hash(name) & self._LOW) or 1
        t, mask = self._table, self._mask
        i = h & mask
        while True:
            slot = t[i]
            if not slot:
                break
            if slot & self._LOW == h:
                if slot & self._MARK:
                    return 2
                t[i] = slot | self._MARK
                return 1
            i = (i + 1) & mask
        t[i] = h
        self._used += 1
        if self._used * 2 > len(t):
            self._grow()
        return 0

    def _grow(self):
        old = self._table
        self._table = array("Q", bytes(16 * len(old)))
        self._mask = len(self._table) - 1
        t, mask, low = self._table, self._mask, self._LOW
        for slot in old:
            if slot:
                i = (slot & low) & mask
                while t[i]:
                    i = (i + 1) & mask
                t[i] = slot
