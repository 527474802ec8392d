"""Size estimates with their error (see ../shared/notes: Chapman's mark-recapture, the
engine's lookup-distance estimator).

Each estimate says what it counts: `reachable` (nodes that answer an unsolicited query: the
ones a crawl can visit), or `alive` (running nodes, those behind a NAT included).
"""

from __future__ import annotations

import math
import zlib
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


def bootstrap_recapture(name: str, listings: dict[str, list[str]], answered: set[str],
                        rng, rounds: int = 100) -> Estimate:
    """Chapman between the two halves of a sweep's referrers (split by a hash of their IP),
    with an interval that also counts how much the estimate moves when the referrers are
    resampled (bootstrap, `rounds` times): Chapman's own variance assumes independent
    captures, and two halves of one sweep are far from that. The interval is the wider of
    the two."""
    referrers = sorted(listings)
    halves = [zlib.crc32(referrer.encode()) & 1 for referrer in referrers]

    def estimate(chosen) -> tuple[set, set]:
        first: set[str] = set()
        second: set[str] = set()
        for index in chosen:
            (first if halves[index] == 0 else second).update(listings[referrers[index]])
        return first & answered, second & answered

    first, second = estimate(range(len(referrers)))
    base = recapture_estimate(name, first, second)
    if base.value is None or len(referrers) < 4:
        return base
    values = []
    for _ in range(rounds):
        sample = [rng.randrange(len(referrers)) for _ in referrers]
        a, b = estimate(sample)
        m = len(a & b)
        if a and b:
            values.append(chapman(len(a), len(b), m)[0])
    values.sort()
    low = values[int(0.025 * len(values))] if values else base.low
    high = values[min(len(values) - 1, int(0.975 * len(values)))] if values else base.high
    # The resampled estimates centre on themselves, not on the full sample's: shift them.
    middle = values[len(values) // 2] if values else base.value
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
