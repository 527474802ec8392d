"""The outbound query budget: how fast our own queries may leave, in all and per remote IP.

Shared by every operation of an engine, so that a thousand lookups at once cannot flood
anyone: libtorrent bans for 5 minutes an IP that sends it 50 packets within 10 s, and a
token bucket of rate r and burst b lets at most b + 10 r queries reach one IP in any 10 s
(the defaults, 3 per second after a burst of 10, give 40). Waiting for the budget is
never a timeout: a query is only timed once it has left.
"""

from __future__ import annotations

import math
from collections import OrderedDict


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class QueryBudget:
    """A global token bucket (`rate` queries per second, `burst` saved up) and one per
    destination IP (`per_ip_rate`, `per_ip_burst`). A rate of 0 means no limit."""

    def __init__(self, rate: float, burst: float, per_ip_rate: float, per_ip_burst: float,
                 now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.per_ip_rate = per_ip_rate
        self.per_ip_burst = max(per_ip_burst, 1.0)
        self._global = _Bucket(self.burst, now)
        self._per_ip: OrderedDict[str, _Bucket] = OrderedDict()
        """Least recently charged first."""

    @staticmethod
    def _refill(bucket: _Bucket, rate: float, burst: float, now: float) -> float:
        elapsed = now - bucket.updated
        if elapsed > 0:
            bucket.tokens = min(burst, bucket.tokens + elapsed * rate)
            bucket.updated = now
        return bucket.tokens

    def global_delay(self, now: float) -> float:
        """Seconds until the global budget allows one more query (0: now)."""
        if self.rate <= 0:
            return 0.0
        tokens = self._refill(self._global, self.rate, self.burst, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def ip_delay(self, ip: str, now: float) -> float:
        """Seconds until one more query may go to `ip` (0: now)."""
        if self.per_ip_rate <= 0:
            return 0.0
        bucket = self._per_ip.get(ip)
        if bucket is None:
            return 0.0
        tokens = self._refill(bucket, self.per_ip_rate, self.per_ip_burst, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.per_ip_rate

    def charge(self, ip: str, now: float) -> None:
        """One query to `ip` leaves now (the caller checked both delays were 0)."""
        if self.rate > 0:
            self._refill(self._global, self.rate, self.burst, now)
            self._global.tokens -= 1.0
        if self.per_ip_rate > 0:
            per_ip = self._per_ip
            bucket = per_ip.get(ip)
            if bucket is None:
                bucket = per_ip[ip] = _Bucket(self.per_ip_burst, now)
            else:
                self._refill(bucket, self.per_ip_rate, self.per_ip_burst, now)
                per_ip.move_to_end(ip)
            bucket.tokens -= 1.0
            # An IP whose bucket has refilled since it was last charged would start full:
            # forget it. What is kept is bounded by the global rate times the refill time.
            full_after = self.per_ip_burst / self.per_ip_rate
            while len(per_ip) > 1:
                oldest = next(iter(per_ip.values()))
                if now - oldest.updated < full_after:
                    break
                per_ip.popitem(last=False)

    def most_in_window(self, window: float = 10.0) -> float:
        """The most queries one IP can get from us in any `window` seconds (inf: no cap)."""
        if self.per_ip_rate <= 0:
            return math.inf
        return self.per_ip_burst + window * self.per_ip_rate
