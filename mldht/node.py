"""The asyncio adapter: one `Node` for one or both address families, around the sans-I/O
`Engine`.

    async with Node(bootstrap=["127.0.0.1:6881"]) as node:
        await node.bootstrap()
        lookup = node.get_peers(info_hash)
        async for peer in lookup:
            print(peer)
        print(lookup.summary)

All the node does is I/O: a UDP socket per family (`udp.SocketDatagramTransport`), one
timer, DNS for the routers, the state file, and futures and async iterators made from the
engine's events. Every protocol decision is the engine's (`mldht.engine`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random as _random
import socket
import time
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

from .bep44 import Item, ItemStore, KeyPair
from .bep51 import Sample
from .blocklist import Blocklist
from .compact import Address, NodeInfo, format_address, normalize_ip, parse_host_port
from .config import DEFAULT_BOOTSTRAP, NodeConfig
from .engine import (
    AnnounceResult, Engine, Event, ItemResult, JoinResult, LookupSummary, NodeStats,
    OperationDone, OperationFailed, PeerLookupResult, PeersFound, PutResult, Renewed,
    SizeEstimate, TraversalSpec,
)
from .errors import InvalidInput, JoinFailed, TransportClosed
from .ids import InfoHash, NodeId
from .krpc import Query, Response
from .peerstore import PeerStore
from .routing import RoutingTable
from .state import check_state_path, load_state, save_state
from .udp import SocketDatagramTransport

log = logging.getLogger(__name__)

RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
"""Socket receive buffer asked for: a flood that fills it would drop everyone's queries."""
RESOLVE_TIMEOUT = 5.0
ROUTER_RETRY_INTERVAL = 60.0
"""A router name that could not be resolved is tried again after this long at most."""

__all__ = ["DHTNode", "EventStream", "Keeper", "Node", "PeerLookup", "ipv6_available",
           "AnnounceResult", "ItemResult", "LookupSummary", "NodeStats", "PutResult"]


def ipv6_available() -> bool:
    """Whether this host can open an IPv6 UDP socket at all."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def _is_ip_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):  # run on every query: parse cheaply
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    try:
        ipaddress.ip_address(host)  # what inet_pton refuses: a scoped IPv6 address
    except ValueError:
        return False
    return True


def _bind_addresses(bind) -> list[Address]:
    """`bind` as a list of (ip, port): one address (a pair or "ip:port") or several."""
    if isinstance(bind, str):
        return [parse_host_port(bind, allow_any_port=True)]
    if isinstance(bind, tuple) and len(bind) == 2 and isinstance(bind[1], int):
        return [(bind[0], bind[1])]
    addresses = [_bind_addresses(item)[0] for item in bind]
    families = [":" in address[0] for address in addresses]
    if not addresses or len(addresses) > 2 or len(set(families)) != len(families):
        raise InvalidInput("give one or two bind addresses, at most one per address family")
    return addresses


class _Protocol(asyncio.DatagramProtocol):
    """For loops that cannot watch sockets (Windows' proactor): the stock transport."""

    def __init__(self, node: "Node") -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.node.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("socket error: %s", exc)


class Node:
    """A Mainline DHT node on one UDP socket per address family (BEP 32 when two).

    `bind`: `(ip, port)`, `"ip:port"`, or a list of one IPv4 and one IPv6 address (port 0:
    any free port). `bootstrap` lists `host:port` strings or `(host, port)` pairs to join
    through; None means the public routers of `DEFAULT_BOOTSTRAP`, a list (even empty)
    replaces them. `state_file` keeps the node ids and good nodes across runs (`FILE` for
    IPv4, `FILE.ipv6` for the IPv6 side of a dual-stack node). A `read_only` node (BEP 43)
    puts `ro`=1 in its queries and answers none: right for one-shot lookups. `clock`
    (seconds, monotonic) and `rng` may be injected for tests.
    """

    def __init__(self, bind: Address | str | Sequence[Address | str] = ("0.0.0.0", 0), *,
                 bootstrap: Sequence[str | Address] | None = None,
                 node_id: NodeId | bytes | None = None, state_file: str | None = None,
                 read_only: bool = False, config: NodeConfig | None = None,
                 rng: _random.Random | None = None, blocklist: Blocklist | None = None,
                 peer_store: PeerStore | None = None, item_store: ItemStore | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.clock: Callable[[], float] = clock or time.monotonic
        self.config = config or NodeConfig()
        self._binds = _bind_addresses(bind)
        self.families = ["ipv6" if ":" in ip else "ipv4" for ip, _ in self._binds]
        self._use_default_routers = bootstrap is None
        self._bootstrap_spec = list(DEFAULT_BOOTSTRAP if bootstrap is None else bootstrap)
        self.state_file = state_file
        self.read_only = read_only
        self.blocklist = blocklist
        self._state_files: dict[str, str] = {}
        node_ids: dict[str, bytes] = {}
        saved: list[NodeInfo] = []
        if state_file:
            for name in self.families:
                path = f"{state_file}.ipv6" if name == "ipv6" and len(self.families) == 2 \
                    else state_file
                check_state_path(path)
                self._state_files[name] = path
                if node_id is None:
                    state = load_state(path, self.config.max_saved_nodes)
                    if state.node_id is not None:
                        node_ids[name] = state.node_id
                    saved += state.nodes
        if node_id is not None:
            node_ids = {name: NodeId(node_id) for name in self.families}
        self.engine = Engine(self.clock(), families=self.families, node_ids=node_ids,
                             config=self.config, rng=rng, read_only=read_only,
                             blocklist=blocklist, peer_store=peer_store, item_store=item_store)
        """The sans-I/O engine this node drives."""
        self.engine.add_saved_nodes(saved)
        self._transports: dict[str, asyncio.DatagramTransport] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._save_timer: asyncio.TimerHandle | None = None
        self._futures: dict[int, asyncio.Future] = {}
        self._peer_sinks: dict[int, Callable[[list[Address]], None]] = {}
        self._renewal_sinks: dict[int, Callable[[Any], None]] = {}
        self._observers: list[Callable[[Event], None]] = []
        self._resolved: dict[str, list[Address]] = {}
        self._unresolved: dict[str, str] = {}
        self._last_resolve = -ROUTER_RETRY_INTERVAL
        self._resolving: asyncio.Task | None = None
        self.last_join: JoinResult | None = None
        self._started = False
        self._closed = False

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, transport: asyncio.DatagramTransport | None = None) -> None:
        """Open the sockets (and start the timer). Does not bootstrap (see `bootstrap`).

        With `transport` (single-family nodes only), no socket is opened: the node sends
        through `transport.sendto` (its `get_extra_info("sockname")` is the node's
        address, and closing the node closes it), and whoever owns the transport hands
        received datagrams to `datagram_received`.
        """
        if self._started:
            return
        if self._closed:
            raise TransportClosed("node closed")
        self._loop = loop = asyncio.get_running_loop()
        if transport is not None:
            if len(self._binds) != 1:
                raise ValueError("a given transport serves a single-family node only")
            self._attach(self.families[0], transport)
        else:
            opened = []
            for name, address in zip(list(self.families), list(self._binds)):
                try:
                    opened.append((name, await self._open_socket(loop, address)))
                except OSError as exc:
                    if len(self._binds) == 1:
                        for _, other in opened:
                            other.close()
                        raise
                    log.warning("no %s socket (%s): going on with one family",
                                "IPv6" if name == "ipv6" else "IPv4", exc)
            if not opened:
                raise OSError("no socket could be opened")
            for name, opened_transport in opened:
                self._attach(name, opened_transport)
            for name in [n for n in self.families if n not in self._transports]:
                self.engine.drop_family(name)
                self.families.remove(name)
        self._started = True
        if self._state_files:
            self._save_timer = loop.call_later(self.config.save_interval, self._periodic_save)
        self._pump()
        for name in self.families:
            log.info("node %s listening on %s%s", self.engine.family(name).node_id.hex(),
                     format_address(self.address_of(name)),
                     " (read-only)" if self.read_only else "")

    async def _open_socket(self, loop, address: Address) -> asyncio.DatagramTransport:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # IPv6 only: the IPv4 side has its own socket, table and id.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            with contextlib.suppress(OSError):  # room for bursts: a full buffer drops everyone's
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            try:
                sock.bind(address)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if exc.errno == errno.EADDRINUSE:
                    reason = "address already in use (another node, or another program, " \
                             "holds that port)"
                raise OSError(exc.errno, f"cannot bind {format_address(address)}: {reason}") \
                    from None
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        try:
            return SocketDatagramTransport(loop, sock, self.datagrams_received)
        except NotImplementedError:  # a loop without add_reader (Windows' proactor)
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
            return transport

    def _attach(self, name: str, transport: asyncio.DatagramTransport) -> None:
        self._transports[name] = transport
        sockname = transport.get_extra_info("sockname")
        self.engine.set_address((sockname[0], sockname[1]))

    async def close(self) -> None:
        """Save the state, end every operation (their awaits raise `TransportClosed`) and
        close the sockets."""
        if self._closed:
            return
        self._closed = True
        if self._started and self._state_files:
            self.save()
        for future in self._futures.values():
            if not future.done():
                future.set_exception(TransportClosed("node closed"))
        self._futures.clear()
        for sink in list(self._peer_sinks.values()):
            sink(None)  # type: ignore[arg-type]
        self._peer_sinks.clear()
        self.engine.close(self.clock())
        while self.engine.next_event() is not None:
            pass
        for handle in (self._timer, self._save_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._save_timer = None
        if self._resolving is not None:
            self._resolving.cancel()
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        self._started = False

    async def __aenter__(self) -> "Node":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def save(self) -> None:
        """Write each family's node id and good nodes to its state file (atomically)."""
        now = self.clock()
        for name, path in self._state_files.items():
            if self.engine.family(name) is None:
                continue
            node_id, nodes = self.engine.saved_state(name, now)
            try:
                save_state(path, node_id, nodes)
            except OSError as exc:
                log.warning("could not save state to %s: %s", path, exc)

    def _periodic_save(self) -> None:
        self.save()
        if self._loop is not None and not self._closed:
            self._save_timer = self._loop.call_later(self.config.save_interval, self._periodic_save)

    # --- driving the engine -------------------------------------------------------------

    def datagrams_received(self, batch: list[tuple[bytes, tuple]]) -> None:
        """Hand the node a batch of `(data, addr)` datagrams that arrived (what its sockets
        do at each wake-up). Never raises for what is in them."""
        self.engine.receive_datagrams(batch, self.clock())
        self._pump()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        """Hand one datagram from `addr` to the node (for the owner of a transport given to
        `start`). Never raises for what is in `data`."""
        self.engine.receive_datagram(data, addr, self.clock())
        self._pump()

    def _pump(self) -> None:
        """Send what the engine has to send, deliver its events, set its timer."""
        engine = self.engine
        out = engine.datagrams_to_send(0.0)
        if out:
            self._send(out)
        if engine.has_events:
            self._deliver_events()
        when = engine.get_timer()
        if when is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._timer_when = None
            return
        if self._timer is not None and self._timer_when is not None and self._timer_when <= when:
            return  # fires first; it sets the next one
        if self._timer is not None:
            self._timer.cancel()
        if self._loop is None or self._closed:
            return
        self._timer_when = when
        self._timer = self._loop.call_later(max(when - self.clock(), 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_when = None
        self.engine.handle_timer(self.clock())
        self._pump()

    def _send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        stats = self.engine.stats
        if len(self._transports) == 1:
            transport = next(iter(self._transports.values()))
            groups = [(transport, datagrams)]
        else:
            by_family: dict[str, list] = {}
            for datagram in datagrams:
                by_family.setdefault("ipv6" if ":" in datagram[1][0] else "ipv4", []).append(datagram)
            groups = [(self._transports.get(name), group) for name, group in by_family.items()]
        for transport, group in groups:
            if transport is None:
                stats.send_failures += len(group)
                continue
            send_batch = getattr(transport, "send_batch", None)
            if send_batch is not None:
                stats.send_failures += send_batch(group)
                continue
            for data, address in group:
                try:
                    transport.sendto(data, address)
                except (OSError, ValueError) as exc:
                    stats.send_failures += 1
                    log.debug("send to %s failed: %s", format_address(address), exc)

    def _deliver_events(self) -> None:
        engine = self.engine
        while True:
            event = engine.next_event()
            if event is None:
                return
            kind = type(event)
            if kind is PeersFound:
                sink = self._peer_sinks.get(event.handle)
                if sink is not None:
                    sink(event.peers)
            elif kind is OperationDone or kind is OperationFailed:
                sink = self._peer_sinks.pop(event.handle, None)
                if sink is not None:
                    sink(None)  # type: ignore[arg-type]
                future = self._futures.pop(event.handle, None)
                if future is not None and not future.done():
                    if kind is OperationDone:
                        future.set_result(event.result)
                    else:
                        future.set_exception(event.error)
            elif kind is Renewed:
                renewal = self._renewal_sinks.get(event.handle)
                if renewal is not None:
                    renewal(event.result)
            else:
                for observer in list(self._observers):
                    try:
                        observer(event)
                    except Exception:  # an observer's bug must not stop the node
                        log.exception("event observer failed")

    def _started_or_raise(self) -> None:
        if not self._started:
            raise TransportClosed("node not started" if not self._closed else "node closed")

    def _future_for(self, handle: int) -> asyncio.Future:
        """A future for the result of the engine operation `handle`, registered before any
        event can be delivered; cancelling it cancels the operation."""
        future = asyncio.get_running_loop().create_future()
        self._futures[handle] = future

        def on_done(done: asyncio.Future) -> None:
            if done.cancelled() and not self._closed:
                self._futures.pop(handle, None)
                self.engine.cancel(handle, self.clock())
                self._pump()
        future.add_done_callback(on_done)
        return future

    def _cancel(self, handle: int) -> None:
        """Stop the engine operation `handle` now (its future, if any, is cancelled)."""
        self._peer_sinks.pop(handle, None)
        future = self._futures.pop(handle, None)
        if not self._closed:
            self.engine.cancel(handle, self.clock())
            self._pump()
        if future is not None and not future.done():
            future.cancel()

    async def _run(self, handle: int) -> Any:
        """The result of the engine operation `handle` (cancelled with the await)."""
        future = self._future_for(handle)
        self._pump()
        return await future

    # --- routers ---------------------------------------------------------------------------

    async def _resolve(self, host: str, port: int) -> list[Address]:
        """Addresses of `host` for the families this node has ([] when it cannot be)."""
        if _is_ip_literal(host):
            ip = normalize_ip(host)
            return [(ip, port)] if ("ipv6" if ":" in ip else "ipv4") in self.families else []
        loop = asyncio.get_running_loop()
        family = socket.AF_UNSPEC if len(self.families) == 2 else (
            socket.AF_INET6 if self.families[0] == "ipv6" else socket.AF_INET)
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        return list(dict.fromkeys((normalize_ip(str(info[4][0])), int(info[4][1]))
                                  for info in infos))

    async def _ensure_routers(self, force: bool = False) -> None:
        """Resolve the bootstrap names once (and those that failed, again after a while):
        one warning per name that cannot be resolved, not one per lookup."""
        pending = [spec for spec in map(self._spec_text, self._bootstrap_spec)
                   if spec not in self._resolved]
        now = self.clock()
        if not pending or (not force and now - self._last_resolve < ROUTER_RETRY_INTERVAL
                           and self._last_resolve >= 0):
            return
        self._last_resolve = now
        for spec in pending:
            try:
                host, port = parse_host_port(spec)
            except InvalidInput as exc:
                self._unresolved[spec] = str(exc)
                continue
            try:
                addresses = await self._resolve(host, port)
            except (OSError, TimeoutError) as exc:
                reason = "no answer from DNS" if isinstance(exc, TimeoutError) else (
                    getattr(exc, "strerror", None) or str(exc))
                if spec not in self._unresolved:
                    log.warning("cannot resolve bootstrap router %s: %s", host, reason)
                self._unresolved[spec] = f"cannot resolve {host}: {reason}"
                continue
            self._unresolved.pop(spec, None)
            self._resolved[spec] = addresses
        addresses = [a for spec in self._resolved for a in self._resolved[spec]]
        self.engine.set_routers(addresses, default=self._use_default_routers)

    @staticmethod
    def _spec_text(spec: str | Address) -> str:
        return spec if isinstance(spec, str) else format_address((spec[0], spec[1]))

    # --- joining ---------------------------------------------------------------------------

    async def bootstrap(self, timeout: float | None = None) -> int:
        """Join the DHT: re-verify saved nodes, ask the bootstrap nodes, look up our own id
        and refresh the buckets. Returns the number of nodes in the routing tables (both
        families). Raises `JoinFailed` (one line: what was tried, what failed) when there
        was somebody to ask and nobody answered."""
        self._started_or_raise()
        await self._ensure_routers(force=True)
        result: JoinResult = await self._run(self.engine.start_bootstrap(self.clock(), timeout))
        self.last_join = result
        if result.answered == 0 and result.table_size == 0 and (
                result.tried or self._unresolved or self._bootstrap_spec):
            raise JoinFailed(self._join_failure(result), [format_address(a) for a in result.tried])
        log.info("bootstrapped: %d nodes in the routing table", result.table_size)
        return result.table_size

    def check_reached(self, summary: LookupSummary) -> None:
        """Raise `JoinFailed` (one line: what was tried, what failed) when `summary`, a
        lookup's, got no answer at all while the node had not joined: the DHT was not
        reached, which is not the same as a lookup that found nothing. One-shot commands
        look up at once, without `bootstrap()`, and call this after."""
        if summary.answered or any(len(f.table) for f in self.engine.families):
            return
        tried = [a for f in self.engine.families for a in f.routers]
        tried += [n.address for f in self.engine.families for n in f.saved_seeds]
        raise JoinFailed(self._join_failure(JoinResult(table_size=0, answered=0, tried=tried)),
                         [format_address(a) for a in tried])

    def _join_failure(self, result: JoinResult) -> str:
        parts = []
        if result.tried:
            shown = ", ".join(format_address(a) for a in result.tried[:6])
            more = f" and {len(result.tried) - 6} more" if len(result.tried) > 6 else ""
            parts.append(f"no answer from {shown}{more}")
        parts += list(dict.fromkeys(self._unresolved.values()))
        if not parts:
            resolved = [a for addresses in self._resolved.values() for a in addresses]
            parts.append("every bootstrap node is on the blocklist" if resolved
                         else "no bootstrap node of this node's address families")
        return "could not join the DHT: " + "; ".join(parts)

    # --- queries ---------------------------------------------------------------------------

    async def _address(self, address: Address | str) -> Address:
        host, port = parse_host_port(address) if isinstance(address, str) else address
        if _is_ip_literal(host):
            return (normalize_ip(host), port)
        try:
            addresses = await self._resolve(host, port)
        except (OSError, TimeoutError) as exc:
            raise InvalidInput(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise InvalidInput(f"{host} has no address of this node's families")
        return addresses[0]

    async def ping(self, address: Address | str, timeout: float | None = None) -> NodeId:
        """Ping a node; returns its id (`QueryTimeout`, `RemoteError` otherwise)."""
        self._started_or_raise()
        address = await self._address(address)
        return await self._run(self.engine.start_ping(address, self.clock(), timeout))

    async def query(self, address: Address | str, query: Query,
                    timeout: float | None = None) -> Response:
        """Send any `mldht.krpc` query object; returns the `Response`. The transaction id,
        `ro` and `v` are set here; waiting for the outbound budget does not count toward
        `timeout`."""
        self._started_or_raise()
        address = await self._address(address)
        return await self._run(self.engine.start_query(address, query, self.clock(), timeout))

    async def sample_infohashes(self, address: Address | str, target: NodeId | bytes | None = None,
                                timeout: float | None = None) -> Sample:
        """BEP 51: a sample of the infohashes `address` stores, how many it stores, when to
        ask again, and its nodes closest to `target` (random when not given). Raises
        `RemoteError`/`QueryTimeout`, or `InvalidSample` when the reply is not a BEP 51 one."""
        self._started_or_raise()
        address = await self._address(address)
        return await self._run(self.engine.start_sample_infohashes(address, self.clock(), target,
                                                                   timeout))

    # --- lookups ---------------------------------------------------------------------------

    async def _prepare_lookup(self) -> None:
        self._started_or_raise()
        if self._bootstrap_spec and any(len(f.table) < self.config.k for f in self.engine.families):
            await self._ensure_routers()

    async def traverse(self, spec: TraversalSpec, timeout: float = 30.0) -> Any:
        """Run a traversal of your own (`mldht.engine.TraversalSpec`: the query it sends,
        what it does with each answer, when to stop) on every family; returns
        `spec.result(summary)`."""
        await self._prepare_lookup()
        return await self._run(self.engine.start_traversal(spec, self.clock(), timeout))

    async def find_node_lookup(self, target: NodeId | bytes, timeout: float = 30.0) -> LookupSummary:
        """Iterative find_node towards `target`; the summary lists the closest nodes found
        (both families, sorted by distance)."""
        await self._prepare_lookup()
        return await self._run(self.engine.start_find_node(NodeId(target), self.clock(), timeout))

    async def find_node(self, target: NodeId | bytes, timeout: float = 30.0) -> list[NodeInfo]:
        """The k closest live nodes to `target` (of each family), by iterative lookup."""
        return (await self.find_node_lookup(target, timeout)).closest

    def get_peers(self, info_hash: InfoHash | bytes, timeout: float = 30.0, *,
                  scrape: bool = False) -> "PeerLookup":
        """Start a get_peers lookup; iterate the result with `async for` to get peers as they
        arrive. With `scrape` (BEP 33) the summary also estimates seeds and peers.

        Like every lookup, it needs no `bootstrap()` first: on a started node whose routing
        table holds fewer than k nodes it begins at once from what the node knows (the
        table, the nodes of its state file, the bootstrap nodes) and its queries do the
        joining; `check_reached(summary)` tells an unreachable DHT from an empty swarm."""
        return PeerLookup(self, InfoHash(info_hash), timeout, scrape)

    async def get_peers_many(self, info_hashes: Iterable[InfoHash | bytes], *,
                             concurrency: int = 16, timeout: float = 30.0,
                             scrape: bool = False) -> AsyncIterator[PeerLookupResult]:
        """Look up many infohashes, at most `concurrency` at a time, all sharing the
        outbound query budget (`NodeConfig.query_rate`, `per_ip_query_rate`): yields a
        `PeerLookupResult` per infohash as each completes (not in input order). Leaving
        the loop early cancels the lookups still running."""
        if concurrency < 1:
            raise InvalidInput("concurrency must be at least 1")
        await self._prepare_lookup()
        pending = iter(info_hashes)
        done: asyncio.Queue[PeerLookupResult] = asyncio.Queue()
        running: dict[int, tuple[InfoHash, list[Address]]] = {}

        def launch() -> bool:
            for raw in pending:
                info_hash = InfoHash(raw)
                handle = self.engine.start_get_peers(info_hash, self.clock(), timeout, scrape)
                found: list[Address] = []
                running[handle] = (info_hash, found)
                self._peer_sinks[handle] = lambda peers, found=found: (
                    found.extend(peers) if peers is not None else None)
                future = self._future_for(handle)
                future.add_done_callback(lambda f, handle=handle: finished(handle, f))
                return True
            return False

        def finished(handle: int, future: asyncio.Future) -> None:
            entry = running.pop(handle, None)
            if entry is None:
                return
            info_hash, found = entry
            if future.cancelled():
                return
            error = future.exception()
            summary = None if error is not None else future.result()
            done.put_nowait(PeerLookupResult(info_hash, found, summary,
                                             None if error is None else str(error)))

        try:
            while len(running) < concurrency and launch():
                pass
            self._pump()
            while running or not done.empty():
                result = await done.get()
                yield result
                while len(running) < concurrency and launch():
                    pass
                self._pump()
        finally:
            now = self.clock()
            for handle in list(running):
                self._peer_sinks.pop(handle, None)
                future = self._futures.pop(handle, None)
                if future is not None and not future.done():
                    future.cancel()
                self.engine.cancel(handle, now)
            running.clear()
            if not self._closed:
                self._pump()

    async def announce(self, info_hash: InfoHash | bytes, port: int | None = None, *,
                       implied_port: bool = False, seed: bool = False,
                       timeout: float = 30.0) -> AnnounceResult:
        """Find the k closest nodes to `info_hash` (each family) and announce `port` (or
        the implied UDP port) to those that gave a token."""
        if port is None and not implied_port:
            raise ValueError("give a port, or implied_port=True")
        await self._prepare_lookup()
        return await self._run(self.engine.start_announce(
            InfoHash(info_hash), self.clock(), port, implied_port=implied_port, seed=seed,
            timeout=timeout))

    # --- BEP 44 -----------------------------------------------------------------------------

    async def get_item(self, target: bytes, salt: bytes = b"", timeout: float = 30.0) -> ItemResult:
        """BEP 44: find the item stored under `target` (an immutable item's hash, or
        `bep44.mutable_target(public_key, salt)`). Every copy is verified before it is
        believed; for a mutable item the one with the highest seq is returned, and `salt`
        must be the one it was put with. Stops at the first genuine immutable item."""
        await self._prepare_lookup()
        return await self._run(self.engine.start_get_item(NodeId(target), self.clock(), salt,
                                                          timeout))

    async def put_immutable(self, value, timeout: float = 30.0) -> PutResult:
        """BEP 44: store `value` (any bencodable value; str is stored as UTF-8 bytes) under
        the SHA-1 of its bencoding on the k closest nodes (each family) that give a token."""
        await self._prepare_lookup()
        return await self._run(self.engine.start_put_immutable(value, self.clock(), timeout))

    async def put_mutable(self, keys: KeyPair, value, *, salt: bytes = b"", seq: int | None = None,
                          cas: int | None = None, timeout: float = 30.0) -> PutResult:
        """BEP 44: sign `value` with `keys` and store it under SHA-1(public key + salt).
        Without `seq`, the highest seq found on the network plus one (1 for a new item).
        `cas`: the seq the put must replace (nodes holding another answer 301). When the
        lookup finds a newer seq than `cas`, the put goes only to the nodes holding it (all
        answer 301), so a lost race is stored nowhere and never shadows the winner."""
        await self._prepare_lookup()
        return await self._run(self.engine.start_put_mutable(
            keys, value, self.clock(), salt=salt, seq=seq, cas=cas, timeout=timeout))

    # --- keeping things alive ----------------------------------------------------------------

    async def keep_announced(self, info_hash: InfoHash | bytes, port: int | None = None, *,
                             implied_port: bool = False, seed: bool = False,
                             interval: float | None = None) -> "Keeper":
        """Announce now and again before the peers expire (every
        `NodeConfig.reannounce_interval`, 15 minutes, with jitter) until the returned
        `Keeper` is cancelled: the Kademlia republish a torrent client needs."""
        await self._prepare_lookup()
        handle = self.engine.start_keep_announced(InfoHash(info_hash), self.clock(), port,
                                                  implied_port=implied_port, seed=seed,
                                                  interval=interval)
        return self._keeper(handle)

    async def keep_item(self, item: Item, interval: float | None = None) -> "Keeper":
        """Put a BEP 44 item (`Item.immutable(value)` or `Item.mutable(keys, value, seq,
        salt)`) now and again every `NodeConfig.item_republish_interval` (1 hour, with
        jitter), before the 2 hours nodes keep it run out, until cancelled. The same item
        is put each time (a mutable one keeps its seq: a newer seq elsewhere shows as 302
        in the round's `PutResult.errors`)."""
        await self._prepare_lookup()
        handle = self.engine.start_keep_item(item, self.clock(), interval)
        return self._keeper(handle)

    def _keeper(self, handle: int) -> "Keeper":
        keeper = Keeper(self, handle)
        self._renewal_sinks[handle] = keeper._renewed
        self._pump()
        return keeper

    # --- what the node knows ------------------------------------------------------------------

    def status(self) -> dict:
        """A JSON-ready snapshot: ids, addresses and external IP per family, the routing
        table per bucket, counters, stores, operations in flight, the size estimate."""
        status = self.engine.status(self.clock())
        status["event_subscribers"] = len(self._observers)
        return status

    def table(self) -> dict[str, dict]:
        """Every routing table entry, per family (`"ipv4"`, `"ipv6"`) and bucket: id,
        address, state, `v` and the client it names, seconds since last heard from,
        failures, BEP 42 validity; the replacement cache of each bucket likewise."""
        return self.engine.table(self.clock())

    def stored_peers(self, info_hash: InfoHash | bytes) -> list[dict]:
        """The live peers announced to this node for `info_hash`: address, seconds since
        the announce, seed. Empty when it stores none (it asks no other node)."""
        return self.engine.stored_peers(bytes(info_hash), self.clock())

    def estimated_size(self) -> SizeEstimate:
        """The DHT's size (nodes that answer), with its standard error, from the closest
        nodes of recent lookups."""
        return self.engine.estimated_size(self.clock())

    def events(self, max_queue: int = 1000,
               kinds: Iterable[str] | None = None) -> "EventStream":
        """A bounded async stream of what happens (`mldht.engine.events`): queries received,
        responses, timeouts, nodes added and removed, lookup progress and completion,
        external IP and id changes. `kinds` keeps only events of those `kind`s
        (`"node_added"`, `"lookup_finished"`...), filtered before they are queued, so that
        a flood of queries received cannot push rarer events out. When the consumer falls
        behind, the oldest events go and `stream.dropped` counts them. Serving stays on
        the quick path."""
        return EventStream(self, max_queue, kinds)

    def add_observer(self, observer: Callable[[Event], None]) -> Callable[[], None]:
        """Call `observer(event)` for every observation event, synchronously (it must be
        quick and must not raise). Returns a function that removes it."""
        self._observers.append(observer)
        self.engine.observing = True

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._observers.remove(observer)
            self.engine.observing = bool(self._observers)
        return remove

    @property
    def stats(self) -> NodeStats:
        return self.engine.stats

    @property
    def node_id(self) -> NodeId:
        """The node id (of the first family of a dual-stack node)."""
        return self.engine.node_id

    @property
    def node_ids(self) -> dict[str, NodeId]:
        return {f.name: f.identity.node_id for f in self.engine.families}

    @property
    def routing_table(self) -> RoutingTable:
        """The routing table (of the first family of a dual-stack node)."""
        return self.engine.families[0].table

    def routing_table_of(self, family: str) -> RoutingTable:
        found = self.engine.family(family)
        if found is None:
            raise InvalidInput(f"this node has no {family} family")
        return found.table

    @property
    def peer_store(self) -> PeerStore:
        return self.engine.peer_store

    @property
    def item_store(self) -> ItemStore:
        return self.engine.item_store

    @property
    def in_flight(self) -> dict[str, int]:
        """Our queries waiting for an answer, by method."""
        return self.engine.transactions.in_flight

    @property
    def is_ipv6(self) -> bool:
        """A single-family IPv6 node."""
        return self.families == ["ipv6"]

    @property
    def external_ip(self) -> str | None:
        """Our IP as other nodes see it (first family), once enough of them agree (BEP 42)."""
        return self.engine.external_ip()

    def address_of(self, family: str) -> Address:
        transport = self._transports.get(family)
        if transport is None:
            raise TransportClosed(f"no {family} socket (node not started?)")
        sockname = transport.get_extra_info("sockname")
        return (sockname[0], sockname[1])

    @property
    def address(self) -> Address:
        """The local (ip, port) of the first family's socket."""
        if not self._transports:
            raise TransportClosed("node not started")
        return self.address_of(self.families[0])

    @property
    def addresses(self) -> list[Address]:
        return [self.address_of(name) for name in self.families if name in self._transports]


DHTNode = Node
"""The name of `Node` before it served both families (kept for existing code)."""


class PeerLookup:
    """A running get_peers lookup: an async iterator of `(ip, port)` peers as they arrive,
    each once (both families of a dual-stack node).

    After iteration ends, `summary` holds the `LookupSummary`. Leaving the loop early
    (break) and calling `aclose()` stops the lookup.
    """

    def __init__(self, node: Node, info_hash: InfoHash, timeout: float, scrape: bool = False) -> None:
        self.node = node
        self.info_hash = info_hash
        self.timeout = timeout
        self.scrape = scrape
        self.summary: LookupSummary | None = None
        self._queue: asyncio.Queue[Address | None] = asyncio.Queue()
        self._handle: int | None = None
        self._result: asyncio.Future | None = None

    def __aiter__(self) -> AsyncIterator[Address]:
        return self

    def _deliver(self, peers: list[Address] | None) -> None:
        if peers is None:
            return
        for peer in peers:
            self._queue.put_nowait(peer)

    async def _start(self) -> None:
        node = self.node
        await node._prepare_lookup()
        handle = node.engine.start_get_peers(self.info_hash, node.clock(), self.timeout, self.scrape)
        self._handle = handle
        node._peer_sinks[handle] = self._deliver
        self._result = node._future_for(handle)
        self._result.add_done_callback(lambda _: self._queue.put_nowait(None))
        node._pump()

    async def __anext__(self) -> Address:
        if self._handle is None:
            await self._start()
        peer = await self._queue.get()
        if peer is not None:
            return peer
        assert self._result is not None
        if self._result.cancelled():
            raise TransportClosed("the lookup was stopped")
        failure = self._result.exception()
        if failure is not None:
            raise failure
        self.summary = self._result.result()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the lookup (now: its queries are no longer awaited)."""
        if self._handle is not None and self._result is not None and not self._result.done():
            self.node._cancel(self._handle)

    async def collect(self) -> list[Address]:
        """Run the lookup to the end and return every peer found."""
        return [peer async for peer in self]


class Keeper:
    """A kept announce or item (`Node.keep_announced`, `Node.keep_item`): `rounds` done so
    far, the `last` round's result (`AnnounceResult` / `PutResult`, or the error that
    ended it), `await next_round()` for the next one, `cancel()` to stop."""

    def __init__(self, node: Node, handle: int) -> None:
        self.node = node
        self.handle = handle
        self.rounds = 0
        self.last: Any = None
        self._waiters: list[asyncio.Future] = []
        self.cancelled = False

    def _renewed(self, result: Any) -> None:
        self.rounds += 1
        self.last = result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)

    async def next_round(self, timeout: float | None = None) -> Any:
        """Wait for the next round's result (at most `timeout` seconds)."""
        if self.cancelled:
            raise TransportClosed("the keeper was cancelled")
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        async with asyncio.timeout(timeout):
            return await future

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        node = self.node
        node._renewal_sinks.pop(self.handle, None)
        node.engine.cancel(self.handle, node.clock())
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(TransportClosed("the keeper was cancelled"))
        if not node._closed:
            node._pump()


class EventStream:
    """`async for event in node.events()`: observation events, at most `max_queue` waiting
    (the oldest dropped first, counted in `dropped`). `close()` (or leaving an `async with`)
    unsubscribes."""

    def __init__(self, node: Node, max_queue: int, kinds: Iterable[str] | None = None) -> None:
        self.max_queue = max(1, max_queue)
        self.kinds = None if kinds is None else frozenset(kinds)
        self.dropped = 0
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._remove = node.add_observer(self._put)
        self._closed = False

    def _put(self, event: Event) -> None:
        if self.kinds is not None and event.kind not in self.kinds:
            return
        if self._queue.qsize() >= self.max_queue:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def __aiter__(self) -> "EventStream":
        return self

    async def __anext__(self) -> Event:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        return await self._queue.get()

    async def get(self, timeout: float | None = None) -> Event:
        """The next event, waiting at most `timeout` seconds (TimeoutError)."""
        async with asyncio.timeout(timeout):
            return await self._queue.get()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._remove()

    async def __aenter__(self) -> "EventStream":
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.close()
