"""asyncio code on the simulator's virtual network, in virtual time.

`run_in_simulation(scheduler, coroutine)` runs an asyncio program (a `Node` and whatever
drives it: the peer finder's own code, say) on an event loop whose clock is the simulator's
`Scheduler`: when the program has nothing ready to run, the loop runs the simulated network
until something wakes the program (a datagram for its node) or its next timer is due. An
hour-long batch of lookups costs the CPU its events need, as the rest of the simulator does.

`attach_node(node, network, address)` starts a `Node` on a virtual address: its datagrams
go through the `VirtualNetwork` (latency, loss, NAT) like every simulated engine's.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any, Awaitable

from .clock import Scheduler
from .network import Address, VirtualNetwork


class _VirtualSelector(selectors.BaseSelector):
    """A selector with no file descriptors to watch: "waiting" runs the simulation."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.loop: "VirtualTimeLoop | None" = None
        self._keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj, events, data=None):
        key = selectors.SelectorKey(fileobj, id(fileobj), events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj):
        return self._keys.pop(fileobj)

    def get_map(self):
        return self._keys

    def close(self) -> None:
        self._keys.clear()

    def select(self, timeout: float | None = None):
        scheduler = self.scheduler
        if timeout is not None and timeout <= 0:
            return []
        loop = self.loop
        until = None if timeout is None else scheduler.now + timeout
        # Each simulated event may hand the program a datagram, which makes callbacks
        # ready: stop there and let asyncio run them.
        woke = scheduler.run_until(done=loop._has_ready, until=until)  # noqa: SLF001
        if not woke and until is None and not len(scheduler):
            raise RuntimeError("the simulation is idle and the program waits with no timer: "
                               "it would wait forever")
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is the scheduler's virtual clock."""

    def __init__(self, scheduler: Scheduler) -> None:
        selector = _VirtualSelector(scheduler)
        super().__init__(selector)
        selector.loop = self
        self.scheduler = scheduler

    def time(self) -> float:
        return self.scheduler.now

    def _has_ready(self) -> bool:
        return bool(self._ready)  # asyncio's queue of callbacks to run now

    def _make_self_pipe(self) -> None:  # no real file descriptors in virtual time
        self._ssock = self._csock = None

    def _close_self_pipe(self) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def _process_self_data(self, data) -> None:
        pass


def run_in_simulation(scheduler: Scheduler, coroutine: Awaitable) -> Any:
    """Run `coroutine` to completion on a `VirtualTimeLoop` over `scheduler`."""
    loop = VirtualTimeLoop(scheduler)
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


async def attach_node(node, network: VirtualNetwork, address: Address) -> None:
    """Start `node` (a single-family `mldht.Node` built with `clock=lambda: scheduler.now`)
    on `address` of the virtual network."""
    transport = network.attach(address, node.datagram_received)
    await node.start(transport=transport)
