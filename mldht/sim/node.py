"""A simulated node: an `Engine` attached to the virtual network and driven by the
scheduler, as the asyncio `Node` drives one on a real socket (but with no event loop)."""

from __future__ import annotations

import math
from typing import Any, Callable

from ..compact import NodeInfo
from ..engine import Engine, OperationDone, OperationFailed, PeersFound
from .clock import Scheduler
from .network import Address, VirtualNetwork

Callback = Callable[[Any, BaseException | None], None]


class SimNode:
    """One engine on one virtual address. `start(handle, on_done)` registers what to call
    when an operation the caller started ends; `peers[handle]` collects the peers of a
    running get_peers."""

    __slots__ = ("engine", "info", "nat", "scheduler", "network", "transport", "armed_at",
                 "callbacks", "peers", "alive")

    def __init__(self, engine: Engine, info: NodeInfo, nat: bool, scheduler: Scheduler,
                 network: VirtualNetwork) -> None:
        self.engine = engine
        self.info = info
        self.nat = nat
        self.scheduler = scheduler
        self.network = network
        self.transport = None
        self.armed_at = math.inf
        self.callbacks: dict[int, Callback] = {}
        self.peers: dict[int, list[Address]] = {}
        self.alive = False

    @property
    def address(self) -> Address:
        return self.info.address

    def attach(self) -> None:
        self.transport = self.network.attach(self.info.address, self.receive, nat=self.nat)
        self.engine.set_address(self.info.address)
        self.alive = True
        self.flush()

    def detach(self) -> None:
        """Leave the network (the engine is closed and no longer driven)."""
        self.alive = False
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.callbacks.clear()
        self.engine.close(self.scheduler.now)
        while self.engine.next_event() is not None:
            pass

    def receive(self, data: bytes, source: Address) -> None:
        self.engine.receive_datagram(data, source, self.scheduler.now)
        self.flush()

    def start(self, handle: int, on_done: Callback, collect_peers: bool = False) -> None:
        self.callbacks[handle] = on_done
        if collect_peers:
            self.peers[handle] = []
        self.flush()

    def flush(self) -> None:
        """Send what the engine has to send, deliver its events, keep its timer armed."""
        engine = self.engine
        now = self.scheduler.now
        out = engine.datagrams_to_send(now)
        if out and self.transport is not None:
            self.transport.send_batch(out)
        if engine.has_events:
            while (event := engine.next_event()) is not None:
                kind = type(event)
                if kind is PeersFound:
                    found = self.peers.get(event.handle)
                    if found is not None:
                        found.extend(event.peers)
                elif kind is OperationDone or kind is OperationFailed:
                    callback = self.callbacks.pop(event.handle, None)
                    if callback is not None:
                        if kind is OperationDone:
                            callback(event.result, None)
                        else:
                            callback(None, event.error)
        when = engine.get_timer()
        if when is not None and when < self.armed_at and self.alive:
            self.armed_at = when
            self.scheduler.call_at(when, self._on_timer, when)

    def _on_timer(self, when: float) -> None:
        if when != self.armed_at or not self.alive:
            return  # superseded by an earlier arming, or gone
        self.armed_at = math.inf
        self.engine.handle_timer(self.scheduler.now)
        self.flush()
