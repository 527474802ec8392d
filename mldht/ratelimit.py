"""Token buckets: a per-IP inbound limit and a global outbound limit (sans-I/O).

Time is passed in; nothing here sleeps. A refused packet is simply dropped by the caller:
a DHT must not queue work for whoever sends the most.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> "TokenBucket":
        return cls(rate, burst, burst, now)

    def allow(self, now: float, cost: float = 1.0) -> bool:
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class PerIpLimiter:
    """One token bucket per source IP, for at most `max_ips` IPs at a time.

    When the table is full the least recently seen IP is forgotten: it comes back with a full
    bucket, which costs an attacker nothing it could not have anyway, while the memory stays
    bounded whatever the number of sources (spoofed ones included).
    """

    def __init__(self, rate: float, burst: float, max_ips: int = 16_384) -> None:
        self.rate = rate
        self.burst = burst
        self.max_ips = max_ips
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, ip: str, now: float) -> bool:
        buckets = self._buckets
        bucket = buckets.get(ip)
        if bucket is None:
            bucket = TokenBucket.full(self.rate, self.burst, now)
            buckets[ip] = bucket
            if len(buckets) > self.max_ips:
                buckets.popitem(last=False)
            # The least recently seen IPs come first: one whose bucket has refilled since
            # would start full anyway, so it is forgotten (what is kept is what limits).
            refill = self.burst / self.rate if self.rate > 0 else 0.0
            while len(buckets) > 1:
                oldest = next(iter(buckets.values()))
                if now - oldest.updated < refill:
                    break
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(ip)
        if bucket.allow(now):
            return True
        self.dropped += 1
        return False
