"""A fake network for the sans-I/O engine: many `Engine`s on a dict of address -> engine,
one virtual clock and one heap of things to do. Nothing here opens a socket: a datagram is a
`bytes` object that the heap hands to the engine at its address after a latency. The clock
and the heap are the simulator's `Scheduler` (`mldht.sim.clock`); what this adds is a plain
fixed-latency network for any number of engines, dual-stack ones included, with every
datagram and event kept for the tests to read.

It is the whole contract of `mldht.engine.Engine` written down as a driver:

    net = EngineNetwork(latency=0.02, seed=1)
    router = net.add(("10.0.0.1", 6881))
    node = net.add(("10.0.0.2", 6881), routers=[("10.0.0.1", 6881)])
    handle = net.start(node, lambda engine, now: engine.start_bootstrap(now))
    result = net.wait(node, handle)            # runs the heap until OperationDone/Failed

Each step the network (1) takes an engine's `datagrams_to_send(now)` and puts each on the
heap to arrive after the latency (to nobody when no engine has that address, or when the
sender or receiver is `down`), (2) reads its events (`next_event()`), (3) asks `get_timer()` and puts a wake-up on
the heap; when a wake-up is due it calls `handle_timer(now)`. `sent` keeps every datagram
with its send time, for tests that read the wire.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from mldht import NodeConfig, NodeId
from mldht.compact import Address
from mldht.engine import Engine, Event, OperationDone, OperationFailed
from mldht.krpc import decode_bencode
from mldht.sim.clock import Scheduler


@dataclass(slots=True)
class Sent:
    """One datagram an engine emitted."""

    at: float
    source: Address
    destination: Address
    data: bytes

    def decoded(self) -> dict | None:
        try:
            message = decode_bencode(self.data)
        except Exception:
            return None
        return message if isinstance(message, dict) else None

    @property
    def is_query(self) -> bool:
        message = self.decoded()
        return message is not None and message.get(b"y") == b"q"


@dataclass(slots=True)
class Seen:
    """One event an engine gave, with the virtual time it was read at."""

    at: float
    event: Event


class EngineNetwork:
    """Engines on a virtual clock (see the module docstring). `latency` is one way, in
    seconds; `jitter` adds a seeded uniform extra of up to that much."""

    def __init__(self, *, latency: float = 0.02, jitter: float = 0.0, seed: int = 0,
                 start: float = 1000.0, record: bool = True) -> None:
        self.scheduler = Scheduler(start)
        self.latency = latency
        self.jitter = jitter
        self.rng = random.Random(seed)
        self.record = record
        self.engines: dict[Address, Engine] = {}
        """Every address -> the engine serving it (a dual-stack engine has two)."""
        self.addresses: dict[int, list[Address]] = {}
        """id(engine) -> its addresses, first family first."""
        self.down: set[Address] = set()
        """Addresses that neither receive nor send (a dead node: queries to it time out)."""
        self.sent: list[Sent] = []
        self.events: dict[int, list[Seen]] = defaultdict(list)
        """id(engine) -> every event it gave, in order."""
        self.delivered = 0
        self._wakeup: dict[int, float] = {}

    @property
    def now(self) -> float:
        return self.scheduler.now

    # --- building --------------------------------------------------------------------------

    def add(self, *addresses: Address, engine: Engine | None = None,
            config: NodeConfig | None = None, node_id: bytes | None = None,
            routers: Iterable[Address] = (), seed: int | None = None,
            fixed_id: bool = True) -> Engine:
        """An engine serving `addresses` (one per family). Without `node_id` it gets a
        random id from the network's seeded PRNG, explicit (so never changed by BEP 42)
        unless `fixed_id` is false."""
        if engine is None:
            families = ["ipv6" if ":" in address[0] else "ipv4" for address in addresses]
            rng = random.Random(self.rng.getrandbits(64) if seed is None else seed)
            ids = {name: NodeId(node_id) if node_id is not None else NodeId.random(rng)
                   for name in families} if fixed_id else {}
            engine = Engine(self.now, families=families, node_ids=ids,
                            config=config or NodeConfig(), rng=rng)
        for address in addresses:
            engine.set_address(address)
            self.engines[address] = engine
        self.addresses[id(engine)] = list(addresses)
        engine.set_routers(routers)
        self.pump(engine)
        return engine

    def address_of(self, engine: Engine, ipv6: bool = False) -> Address:
        for address in self.addresses[id(engine)]:
            if (":" in address[0]) == ipv6:
                return address
        raise KeyError("no address of that family")

    # --- driving ----------------------------------------------------------------------------

    def start(self, engine: Engine, start: Callable[[Engine, float], int]) -> int:
        """Call `start(engine, now)` (an `engine.start_*`), then pump the engine."""
        handle = start(engine, self.now)
        self.pump(engine)
        return handle

    def pump(self, engine: Engine) -> None:
        """Put the engine's datagrams on the heap, read its events, book its wake-up."""
        now = self.now
        out = engine.datagrams_to_send(now)
        if out:
            addresses = self.addresses[id(engine)]
            for data, destination in out:
                ipv6 = ":" in destination[0]
                source = next((a for a in addresses if (":" in a[0]) == ipv6), addresses[0])
                if self.record:
                    self.sent.append(Sent(now, source, destination, data))
                delay = self.latency + (self.rng.uniform(0, self.jitter) if self.jitter else 0.0)
                self.scheduler.call_at(now + delay, self._deliver, source, destination, data)
        if engine.has_events:
            seen = self.events[id(engine)]
            while (event := engine.next_event()) is not None:
                seen.append(Seen(now, event))
        when = engine.get_timer()
        if when is not None:
            booked = self._wakeup.get(id(engine))
            if booked is None or when < booked:
                self._wakeup[id(engine)] = when
                self.scheduler.call_at(when, self._wake, engine, when)

    def _deliver(self, source: Address, destination: Address, data: bytes) -> None:
        engine = self.engines.get(destination)
        if engine is None or destination in self.down or source in self.down:
            return
        self.delivered += 1
        engine.receive_datagram(data, source, self.now)
        self.pump(engine)

    def _wake(self, engine: Engine, when: float) -> None:
        if self._wakeup.get(id(engine)) != when:
            return  # superseded by an earlier wake-up that already ran
        del self._wakeup[id(engine)]
        engine.handle_timer(self.now)
        self.pump(engine)

    def run_until(self, until: float, max_steps: int = 5_000_000) -> None:
        """Run everything due up to the virtual time `until`, then set the clock there."""
        self.scheduler.run_until(until=until, max_calls=max_steps)

    def run_for(self, seconds: float, max_steps: int = 5_000_000) -> None:
        self.run_until(self.now + seconds, max_steps)

    def run_while(self, condition: Callable[[], bool], limit: float,
                  max_steps: int = 5_000_000) -> None:
        """Run while `condition()` holds, for at most `limit` virtual seconds."""
        if not self.scheduler.run_until(lambda: not condition(), until=self.now + limit,
                                        max_calls=max_steps):
            raise AssertionError(f"still waiting after {limit} virtual seconds")

    # --- reading results --------------------------------------------------------------------

    def events_of(self, engine: Engine, handle: int | None = None) -> list[Event]:
        return [seen.event for seen in self.events[id(engine)]
                if handle is None or getattr(seen.event, "handle", None) == handle]

    def outcome(self, engine: Engine, handle: int) -> Event | None:
        """The OperationDone/OperationFailed of `handle`, once it came."""
        for seen in self.events[id(engine)]:
            event = seen.event
            if isinstance(event, (OperationDone, OperationFailed)) and event.handle == handle:
                return event
        return None

    def wait(self, engine: Engine, handle: int, limit: float = 120.0):
        """Run until operation `handle` ends; its result (raises its error)."""
        self.run_while(lambda: self.outcome(engine, handle) is None, limit)
        event = self.outcome(engine, handle)
        if isinstance(event, OperationFailed):
            raise event.error
        assert isinstance(event, OperationDone)
        return event.result

    def wait_all(self, engine: Engine, handles: Iterable[int], limit: float = 300.0) -> dict:
        """Run until every operation in `handles` ended: handle -> its end event."""
        handles = set(handles)
        ended: dict[int, Event] = {}
        seen_count = [0]

        def waiting() -> bool:
            seen = self.events[id(engine)]
            for entry in seen[seen_count[0]:]:
                event = entry.event
                if isinstance(event, (OperationDone, OperationFailed)) and event.handle in handles:
                    ended[event.handle] = event
            seen_count[0] = len(seen)
            return len(ended) < len(handles)

        self.run_while(waiting, limit)
        return ended

    def queries_from(self, engine: Engine) -> list[Sent]:
        """The queries `engine` sent (decoded `y` = q), in send order."""
        mine = set(self.addresses[id(engine)])
        return [sent for sent in self.sent if sent.source in mine and sent.is_query]


def build_network(count: int, *, first_octets: str = "10.0", port: int = 6881,
                  latency: float = 0.02, jitter: float = 0.0, seed: int = 0,
                  config: NodeConfig | None = None, join: bool = True,
                  ipv6: bool = False, stagger: float = 0.05,
                  net: EngineNetwork | None = None,
                  ip_of: Callable[[int], str] | None = None) -> tuple[EngineNetwork, list[Engine]]:
    """`count` engines on 10.0.x.y (or `ip_of(index)`; and fd00::N with `ipv6`); every one
    but the first bootstraps through the first, a little apart (`stagger`), and the
    network runs until every bootstrap ended."""
    net = net or EngineNetwork(latency=latency, jitter=jitter, seed=seed)
    engines: list[Engine] = []
    router: list[Address] = []
    for index in range(count):
        ip = ip_of(index) if ip_of else f"{first_octets}.{index // 250}.{index % 250 + 1}"
        addresses: list[Address] = [(ip, port)]
        if ipv6:
            addresses.append((f"fd00::{index + 1:x}", port))
        engine = net.add(*addresses, config=config, routers=router)
        engines.append(engine)
        if index == 0:
            router = list(addresses)
    if join:
        handles = {}
        for engine in engines[1:]:
            handles[id(engine)] = net.start(engine, lambda e, now: e.start_bootstrap(now))
            net.run_for(stagger)
        for engine in engines[1:]:
            net.wait(engine, handles[id(engine)], limit=120.0)
    return net, engines


def true_closest(engines: Iterable[Engine], target: bytes, k: int = 8,
                 exclude: Engine | None = None, family: str = "ipv4") -> list[NodeId]:
    ids = [engine.family(family).node_id for engine in engines
           if engine is not exclude and engine.family(family) is not None]
    return sorted(ids, key=lambda node_id: node_id.distance(target))[:k]
