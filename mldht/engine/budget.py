"""The outbound query budget: how fast our own queries may leave, in all and per remote IP.

Shared by every operation of an engine, so that a thousand lookups at once cannot flood
anyone: libtorrent bans for 5 minutes an IP that sends it 50 packets within 10 s, and a
token bucket of rate r and burst b lets at most b + 10 r queries reach one IP in any 10 s
(the defaults, 3 per second after a burst of 10, give 40). Waiting for the budget is
never a timeout: a query is only timed once it has left.
"""

from __future__ import annotations

import math


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class QueryBudget:
    """A global token bucket (`rate` queries per second, `burst` saved up) and one per
    destination IP (`per_ip_rate`, `per_ip_burst`). A rate of 0 means no limit."""

    def __init__(self, rate: float, burst: float, per_ip_rate: float, per_ip_burst: float,
                 now: float, max_ips: int = 65_536) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.per_ip_rate = per_ip_rate
        self.per_ip_burst = max(per_ip_burst, 1.0)
        self.max_ips = max_ips
        self._global = _Bucket(self.burst, now)
        self._per_ip: dict[str, _Bucket] = {}
        self._prune_at = max_ips

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
            bucket = self._per_ip.get(ip)
            if bucket is None:
                bucket = self._per_ip[ip] = _Bucket(self.per_ip_burst, now)
                if len(self._per_ip) > self._prune_at:
                    self._prune(now)
            else:
                self._refill(bucket, self.per_ip_rate, self.per_ip_burst, now)
            bucket.tokens -= 1.0

    def _prune(self, now: float) -> None:
        """Forget the IPs whose bucket has refilled: they would start full anyway. What is
        left is bounded by the global rate times the refill time."""
        full_after = self.per_ip_burst / self.per_ip_rate
        self._per_ip = {ip: bucket for ip, bucket in self._per_ip.items()
                        if now - bucket.updated < full_after}
        self._prune_at = max(self.max_ips, 2 * len(self._per_ip))

    def tracked_ips(self) -> int:
        return len(self._per_ip)

    def most_in_window(self, window: float = 10.0) -> float:
        """The most queries one IP can get from us in any `window` seconds (inf: no cap)."""
        if self.per_ip_rate <= 0:
            return math.inf
        return self.per_ip_burst + window * self.per_ip_rate
