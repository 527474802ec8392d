"""Where a sweep is in the keyspace: the ids it knows, in order, and the stretches replies
have covered, each kept so that a sweep of 20 million nodes costs the same per node as one
of a thousand.

Positions are the first 64 bits of a node id (`key64`): two of 25 million random ids share
them with a chance of 1 in 10^5, and a sweep only needs the order and the gaps.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from typing import Iterator

KEYSPACE = 1 << 64
BUCKET_TARGET = 64
"""Average entries per bucket of `SortedKeys` before it doubles its buckets."""


def key64(node_id: bytes) -> int:
    return int.from_bytes(node_id[:8], "big")


class SortedKeys:
    """(key, value) pairs in key order: 64-bit keys, 32-bit values, 12 bytes each.

    The keyspace is cut into 2^bits buckets by the keys' first bits, each a pair of small
    sorted arrays: an insertion moves a few dozen entries, not millions (ids are uniform,
    so buckets stay about `BUCKET_TARGET` long; the buckets double when they grow past it,
    at a cost linear in the entries, so amortised constant per insertion)."""

    def __init__(self, bits: int = 4) -> None:
        self.bits = bits
        self._keys = [array("Q") for _ in range(1 << bits)]
        self._values = [array("I") for _ in range(1 << bits)]
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, key: int, value: int) -> None:
        bucket = key >> (64 - self.bits)
        keys = self._keys[bucket]
        index = bisect_right(keys, key)
        keys.insert(index, key)
        self._values[bucket].insert(index, value)
        self.count += 1
        if self.count > BUCKET_TARGET << self.bits and self.bits < 40:
            self._split()

    def _split(self) -> None:
        bits = self.bits + 1
        keys: list[array] = []
        values: list[array] = []
        for old_keys, old_values in zip(self._keys, self._values):
            # The lower half of each bucket keeps its next bit 0: one bisect splits it.
            if old_keys:
                middle = ((old_keys[0] >> (64 - self.bits)) << 1 | 1) << (64 - bits)
                cut = bisect_left(old_keys, middle)
            else:
                cut = 0
            keys += [old_keys[:cut], old_keys[cut:]]
            values += [old_values[:cut], old_values[cut:]]
        self.bits, self._keys, self._values = bits, keys, values

    def after(self, key: int) -> tuple[int, int] | None:
        """The first (key, value) with a key above `key`, or None."""
        bucket = key >> (64 - self.bits)
        keys = self._keys[bucket]
        index = bisect_right(keys, key)
        if index < len(keys):
            return keys[index], self._values[bucket][index]
        for bucket in range(bucket + 1, len(self._keys)):
            if self._keys[bucket]:
                return self._keys[bucket][0], self._values[bucket][0]
        return None

    def before(self, key: int) -> tuple[int, int] | None:
        """The last (key, value) with a key below `key`, or None."""
        bucket = min(key >> (64 - self.bits), len(self._keys) - 1)
        keys = self._keys[bucket]
        index = bisect_left(keys, key)
        if index > 0:
            return keys[index - 1], self._values[bucket][index - 1]
        for bucket in range(bucket - 1, -1, -1):
            if self._keys[bucket]:
                return self._keys[bucket][-1], self._values[bucket][-1]
        return None

    def around(self, key: int) -> Iterator[tuple[int, int]]:
        """Every (key, value), nearest to `key` first (alternating sides, by distance)."""
        below = self.before(key + 1)
        above = self.after(key)
        while below is not None or above is not None:
            if above is None or (below is not None and key - below[0] <= above[0] - key):
                yield below
                below = self.before(below[0]) if below[0] > 0 else None
            else:
                yield above
                above = self.after(above[0])

    def items(self) -> Iterator[tuple[int, int]]:
        for keys, values in zip(self._keys, self._values):
            yield from zip(keys, values)

    def memory(self) -> int:
        """Bytes held (the arrays' buffers and headers)."""
        return sum(k.buffer_info()[1] * 8 + v.buffer_info()[1] * 4 + 160
                   for k, v in zip(self._keys, self._values))


class Coverage:
    """Disjoint stretches [low, high] of the keyspace a reply showed complete, in order.

    Kept as two sorted arrays of starts and ends: a sweep covers the keyspace from low to
    high, so new stretches land near the end of the arrays, where an insertion moves
    little."""

    def __init__(self) -> None:
        # Two arrays of 64-bit positions (16 bytes a stretch; a list of ints takes 88):
        # the walk leaves a stretch for every few nodes, the gaps between replies' balls.
        self.starts = array("Q")
        self.ends = array("Q")

    def __len__(self) -> int:
        return len(self.starts)

    def cover(self, low: int, high: int) -> None:
        starts, ends = self.starts, self.ends
        index = bisect_left(ends, low - 1) if low else 0
        last = index
        while last < len(starts) and starts[last] <= high + 1:
            last += 1
        if last > index:
            low = min(low, starts[index])
            high = max(high, ends[last - 1])
            starts[index:last] = array("Q", [low])
            ends[index:last] = array("Q", [high])
        else:
            starts.insert(index, low)
            ends.insert(index, high)

    def end_at(self, position: int) -> int | None:
        """The end + 1 of the stretch holding `position`, or None (not covered)."""
        index = bisect_right(self.starts, position) - 1
        if index >= 0 and self.ends[index] >= position:
            return self.ends[index] + 1
        return None

    def end_before(self, position: int) -> int:
        """Where the last stretch before an uncovered `position` ends, + 1 (0: none)."""
        index = bisect_right(self.starts, position) - 1
        return self.ends[index] + 1 if index >= 0 else 0

    def next_start(self, position: int) -> int | None:
        """The start of the first stretch after `position`, or None."""
        index = bisect_right(self.starts, position)
        return self.starts[index] if index < len(self.starts) else None

    def covered(self, position: int) -> bool:
        return self.end_at(position) is not None

    def holes(self) -> list[tuple[int, int]]:
        """The stretches not covered, in order."""
        holes, position = [], 0
        for start, end in zip(self.starts, self.ends):
            if start > position:
                holes.append((position, start - 1))
            position = end + 1
        if position < KEYSPACE:
            holes.append((position, KEYSPACE - 1))
        return holes

    def length(self) -> int:
        """How much of the keyspace is covered."""
        return sum(end + 1 - start for start, end in zip(self.starts, self.ends))


__all__ = ["Coverage", "KEYSPACE", "SortedKeys", "key64"]
