"""Size estimates with their error (see ../shared/notes: Chapman's mark-recapture, the
engine's lookup-distance estimator).

Each estimate says what it counts: `reachable` (nodes that answer an unsolicited query: the
ones a crawl can visit), or `alive` (running nodes, those behind a NAT included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Estimate:
    name: str
    value: float | None
    low: float | None
    high: float | None
    counts: str
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        def rounded(x):
            return None if x is None else round(x, 1)
        return {"name": self.name, "value": rounded(self.value), "low": rounded(self.low),
                "high": rounded(self.high), "counts": self.counts, "detail": self.detail}


def chapman(n1: int, n2: int, m: int) -> tuple[float, float, float]:
    """Chapman's estimate of a population from two captures of sizes n1 and n2 with m in
    both, and its 95 % interval (normal approximation, as pubky's mark_recapture does)."""
    value = (n1 + 1) * (n2 + 1) / (m + 1) - 1
    variance = (n1 + 1) * (n2 + 1) * (n1 - m) * (n2 - m) / ((m + 1) ** 2 * (m + 2))
    half = 1.96 * math.sqrt(max(variance, 0.0))
    return value, max(value - half, float(max(n1 + n2 - m, 0))), value + half


def recapture_estimate(name: str, first: set, second: set, counts: str = "reachable",
                       **detail) -> Estimate:
    n1, n2, m = len(first), len(second), len(first & second)
    if not n1 or not n2:
        return Estimate(name, None, None, None, counts, {"n1": n1, "n2": n2, "m": m, **detail})
    value, low, high = chapman(n1, n2, m)
    return Estimate(name, value, low, high, counts, {"n1": n1, "n2": n2, "m": m, **detail})


def count_estimate(name: str, count: int, counts: str, **detail) -> Estimate:
    """A plain count (nodes found, nodes that answered): a lower bound of what it counts."""
    return Estimate(name, float(count), float(count), None, counts, detail)


def engine_estimate(size_estimate: dict) -> Estimate:
    """`node.estimated_size().as_dict()`: the lookup-distance estimator of the engine."""
    size = size_estimate.get("size")
    interval = size_estimate.get("interval95") or [None, None]
    return Estimate("lookup distances", float(size) if size else None, interval[0],
                    interval[1], "reachable",
                    {"standard_error": size_estimate.get("standard_error"),
                     "lookups": size_estimate.get("lookups")})
