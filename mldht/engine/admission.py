"""What gets in and what goes out unasked: the blocklist, the per-IP inbound limit and the
global budget on the bytes of our replies (sans-I/O, time passed in).

An IP we are waiting on (a transaction is open with it) is not charged before decoding:
its replies are free, but whatever else it sends is charged once decoded.
"""

from __future__ import annotations

from ..blocklist import Blocklist
from ..config import NodeConfig
from ..ratelimit import PerIpLimiter, TokenBucket


class Admission:
    def __init__(self, config: NodeConfig, blocklist: Blocklist | None, now: float) -> None:
        self.blocklist = blocklist
        self.limited = config.inbound_rate > 0
        self.inbound = PerIpLimiter(config.inbound_rate, config.inbound_burst,
                                    config.max_limited_ips)
        self.reply_limited = config.reply_bytes_per_second > 0
        self.reply_budget = TokenBucket.full(config.reply_bytes_per_second,
                                             config.reply_bytes_per_second, now)

    def is_blocked(self, ip: str) -> bool:
        return self.blocklist is not None and ip in self.blocklist

    def admit(self, ip: str, now: float) -> bool:
        """Charge one datagram to `ip`; False when it is over its rate (drop it unread)."""
        return self.inbound.allow(ip, now)

    def allow_reply(self, size: int, now: float) -> bool:
        """Whether a reply of `size` bytes fits the global reply budget now (charged if so)."""
        return not self.reply_limited or self.reply_budget.allow(now, size)
