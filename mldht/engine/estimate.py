"""The size of the DHT, estimated from the distances of the closest nodes lookups find.

For one lookup, let d_i be the XOR distance from the target to the i-th closest node that
answered (i = 1..k), as a fraction of the keyspace. With N nodes spread uniformly,
E[d_i] = i / (N + 1); fitting d_i = i / (N + 1) by least squares through the origin gives
N + 1 = sum(i^2) / sum(i * d_i) (pubky/mainline's estimator, after E. Sohl 2020). One
lookup says little (b below has a coefficient of variation of 38 % for k = 8), and averaging the per-lookup ratios would bias the
result upwards (the mean of 1/x is more than 1/mean), so the lookups are pooled: with
b_j = sum(i * d_i) of lookup j, N + 1 = sum(i^2) / mean(b), and its standard error follows
from the spread of the b_j (the delta method: N * sd(b) / (mean(b) * sqrt(L))).

It counts the nodes that answer us, and runs low where many nodes time out or a lookup
misses some of the true closest nodes.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

from ..ids import ID_BITS

KEYSPACE = float(1 << ID_BITS)


@dataclass(slots=True, frozen=True)
class SizeEstimate:
    """`size` nodes, with `standard_error`, from `lookups` lookups (size 0 and error inf
    until there is at least one)."""

    size: float
    standard_error: float
    lookups: int

    @property
    def interval95(self) -> tuple[float, float]:
        half = 1.96 * self.standard_error
        return (max(0.0, self.size - half), self.size + half)

    def as_dict(self) -> dict:
        low, high = self.interval95
        finite = math.isfinite(self.standard_error)
        return {"size": round(self.size), "standard_error": round(self.standard_error)
                if finite else None, "interval95": [round(low), round(high)] if finite else None,
                "lookups": self.lookups}


class SizeEstimator:
    """Pools the last `window` lookups that found `k` answering nodes, at most `max_age`
    seconds old (a node that joined a growing network must not keep counting the lookups it
    made when the network was small)."""

    def __init__(self, k: int = 8, window: int = 256, max_age: float = 3600.0) -> None:
        self.k = k
        self._squares = sum(rank * rank for rank in range(1, k + 1))
        self.window = window
        self.max_age = max_age
        self._weighted: collections.deque[tuple[float | None, float]] | None = None

    def record(self, distances: list[int], now: float | None = None) -> None:
        """A lookup ended (at `now`) with the closest answering nodes at these distances
        (sorted)."""
        if len(distances) < self.k:
            return  # a lookup that did not fill its closest set says nothing reliable
        weighted = sum(rank * (d / KEYSPACE) for rank, d in enumerate(distances[:self.k], 1))
        if weighted > 0:
            if self._weighted is None:  # made on first use: most engines never estimate
                self._weighted = collections.deque(maxlen=self.window)
            self._weighted.append((now, weighted))

    def estimate(self, now: float | None = None) -> SizeEstimate:
        """The estimate from the lookups recorded (those older than `max_age` before `now`
        left out, when `now` is given)."""
        recorded = self._weighted or ()
        if now is not None:
            horizon = now - self.max_age
            values = [w for at, w in recorded if at is None or at >= horizon]
        else:
            values = [w for _, w in recorded]
        if not values:
            return SizeEstimate(0.0, math.inf, 0)
        mean = sum(values) / len(values)
        size = max(self._squares / mean - 1.0, 0.0)
        if len(values) < 2:
            return SizeEstimate(size, math.inf, 1)
        deviation = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return SizeEstimate(size, (size + 1.0) * deviation / (mean * math.sqrt(len(values))),
                            len(values))
