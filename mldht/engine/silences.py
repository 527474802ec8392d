"""Which addresses let our queries go unanswered lately, so that lookups ask them last.

About half of the contacts the public DHT hands out never answer (NATs, firewalls, nodes
gone), and the same ones come back: a node's table lists the same stale contacts to every
lookup that passes by. A lookup that asks one again spends a slot on it until its soft
timeout, and a datagram. the8472's mldht keeps such a memory (`NonReachableCache`) and
skips what failed repeatedly; here one silence is enough to be asked *last* (never
skipped: a lookup that runs out of other candidates asks these too, so a node whose own
link went down for a moment does not starve its lookups), and any answer from the address
clears it.
"""

from __future__ import annotations

from collections import OrderedDict

from ..compact import Address

SILENCE_MEMORY = 600.0
"""Seconds an address stays suspected after it last let a query go unanswered."""
SILENCE_CAPACITY = 8192
"""Addresses remembered at most (the oldest silence is forgotten first): 8192 are about
a warm node's four hundred lookups, 1.5 MB."""


class Silences:
    """A bounded memory of addresses that did not answer a query of ours in time."""

    def __init__(self, memory: float = SILENCE_MEMORY, capacity: int = SILENCE_CAPACITY) -> None:
        self.memory = memory
        self.capacity = capacity
        self._until: OrderedDict[Address, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def note(self, address: Address, now: float) -> None:
        """`address` let a query of ours pass its (soft) timeout unanswered."""
        until = self._until
        until[address] = now + self.memory
        until.move_to_end(address)
        while len(until) > self.capacity:
            until.popitem(last=False)

    def forget(self, address: Address) -> None:
        """`address` answered (a reply or an error): it is there."""
        if self._until:
            self._until.pop(address, None)

    def suspected(self, address: Address, now: float) -> bool:
        """Whether `address` went silent on us within the last `memory` seconds."""
        until = self._until.get(address)
        if until is None:
            return False
        if until <= now:
            del self._until[address]
            return False
        return True
