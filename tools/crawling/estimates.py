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


def chapman_estimate(name: str, n1: int, n2: int, m: int, counts: str = "reachable",
                     **detail) -> Estimate:
    """Chapman's estimate from the sizes of two captures and of their overlap."""
    if not n1 or not n2:
        return Estimate(name, None, None, None, counts, {"n1": n1, "n2": n2, "m": m, **detail})
    value, low, high = chapman(n1, n2, m)
    return Estimate(name, value, low, high, counts, {"n1": n1, "n2": n2, "m": m, **detail})


HALF = 0x0000FFFF
"""Referrer groups 0-15 are the first half of the referrers, 16-31 the second."""


def _captures(masks: dict[int, int], chosen: int) -> tuple[int, int, int]:
    """Sizes of the two captures (nodes listed by a chosen group of each half) and of
    their overlap, from how many nodes each set of groups listed."""
    first_groups, second_groups = chosen & HALF, chosen & ~HALF
    n1 = n2 = m = 0
    for mask, count in masks.items():
        first, second = mask & first_groups, mask & second_groups
        if first:
            n1 += count
        if second:
            n2 += count
            if first:
                m += count
    return n1, n2, m


def grouped_recapture(name: str, masks: dict[int, int], rng, rounds: int = 100,
                      groups: int = 32) -> Estimate:
    """Chapman between the two halves of a sweep's referrers, from `masks` (for each set of
    referrer groups, as a bit mask, the number of answering nodes listed by exactly those
    groups: `nodes.GROUPS` groups of referrers split by a hash of their IP, 16 to a half),
    with an interval that also counts how much the estimate moves when the groups are
    resampled (bootstrap, `rounds` times): Chapman's own variance assumes independent
    captures, and two halves of one sweep are far from that. The interval is the wider of
    the two. Keeping a node's groups (4 bytes) instead of every referral keeps this linear
    in the nodes: a resample costs one pass over the distinct masks."""
    everyone = (1 << groups) - 1
    base = chapman_estimate(name, *_captures(masks, everyone))
    if base.value is None:
        return base
    values = []
    for _ in range(rounds):
        chosen = 0
        for _ in range(groups):
            chosen |= 1 << rng.randrange(groups)
        n1, n2, m = _captures(masks, chosen)
        if n1 and n2:
            values.append(chapman(n1, n2, m)[0])
    if not values:
        return base
    values.sort()
    low = values[int(0.025 * len(values))]
    high = values[min(len(values) - 1, int(0.975 * len(values)))]
    # The resampled estimates centre on themselves, not on the full sample's: shift them.
    middle = values[len(values) // 2]
    low, high = base.value - (middle - low), base.value + (high - middle)
    return Estimate(name, base.value, min(base.low, low), max(base.high, high), base.counts,
                    {**base.detail, "bootstrap_rounds": len(values)})


SUMMED = ("nodes that answered", "nodes found")


def combine_parts(parts: list[list[Estimate]]) -> list[Estimate]:
    """One crawl's estimates from those of its N partitions (`--partition I/N`), each part
    having counted the nodes of its own ids: counts and mark-recapture estimates add up
    (their interval half-widths in quadrature: the parts' captures are independent);
    lookup distances, which each part made of the whole network, are averaged weighted by
    the inverse of their variance. An estimate some part lacks is left out."""
    names: list[str] = []
    for estimates in parts:
        for estimate in estimates:
            if estimate.name not in names:
                names.append(estimate.name)
    combined = []
    for name in names:
        rows = [next((e for e in estimates if e.name == name), None) for estimates in parts]
        if any(row is None for row in rows):
            continue
        counts = rows[0].counts
        detail = {"parts": len(rows)}
        if any(row.value is None for row in rows):
            combined.append(Estimate(name, None, None, None, counts, detail))
        elif name == "lookup distances":
            errors = [row.detail.get("standard_error") or 0 for row in rows]
            if all(error > 0 for error in errors):
                weights = [1 / error ** 2 for error in errors]
                value = sum(w * row.value for w, row in zip(weights, rows)) / sum(weights)
                error = 1 / math.sqrt(sum(weights))
            else:
                value, error = sum(row.value for row in rows) / len(rows), None
            low = None if error is None else value - 1.96 * error
            high = None if error is None else value + 1.96 * error
            combined.append(Estimate(name, value, low, high, counts, {
                **detail, "standard_error": None if error is None else round(error, 1),
                "lookups": sum(row.detail.get("lookups") or 0 for row in rows)}))
        else:
            value = sum(row.value for row in rows)
            if any(row.low is None for row in rows):
                low = None
            elif name in SUMMED:
                low = sum(row.low for row in rows)
            else:
                low = value - math.sqrt(sum((row.value - row.low) ** 2 for row in rows))
            high = None if any(row.high is None for row in rows) else \
                value + math.sqrt(sum((row.high - row.value) ** 2 for row in rows))
            for key in ("n1", "n2", "m"):
                if all(key in row.detail for row in rows):
                    detail[key] = sum(row.detail[key] for row in rows)
            combined.append(Estimate(name, value, low, high, counts, detail))
    return combined
