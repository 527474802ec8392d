"""The asyncio runtime: one UDP endpoint around the sans-I/O core, and the public node API.

    async with DHTNode(bootstrap=["127.0.0.1:6881"]) as node:
        await node.bootstrap()
        lookup = node.get_peers(info_hash)
        async for peer in lookup:
            print(peer)
        print(lookup.summary)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random as _random
import socket
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Sequence

from .bep42 import ExternalIpVoter, is_secure_id, secure_node_id
from .bep33 import ScrapeEstimate, ScrapeMerger
from .bep44 import Item, ItemStore, bencode as bencode_value, mutable_target
from .bep51 import Sample
from .blocklist import Blocklist
from .ratelimit import PerIpLimiter, TokenBucket
from .compact import (
    Address, NodeInfo, format_address, is_contactable, normalize_ip, parse_host_port,
)
from .config import DEFAULT_BOOTSTRAP, NodeConfig
from .errors import (
    InvalidInput, KrpcDecodeError, MldhtError, QueryTimeout, RemoteError, TransportClosed,
)
from .ids import InfoHash, NodeId, random_id_in_bucket
from .krpc import (
    PROTOCOL_ERROR, AnnouncePeer, Error, FindNode, Get, GetPeers, Ping, Put, Query, Response,
    SampleInfohashes,
    decode_datagram, encode_message, interpret_message,
)
from .lookup import Lookup
from .peerstore import PeerStore
from .routing import InsertOutcome, InsertResult, RoutingTable
from .server import QueryHandler
from .state import load_state, save_state
from .tokens import TokenManager
from .udp import SocketDatagramTransport

log = logging.getLogger(__name__)

TRANSACTION_ID_LENGTH = 4
MAX_VERIFY_PINGS = 64
"""Bound on concurrent pings that verify nodes which queried us."""


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


VERIFY_INTERVAL = 30.0
"""Seconds between two verification pings of one IP."""
MAX_VERIFY_MEMORY = 16_384
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
"""Socket receive buffer asked for: a flood that fills it would drop everyone's queries."""


@dataclass(slots=True)
class NodeStats:
    """Counters of what the node has sent and received since it started."""

    datagrams_received: int = 0
    datagrams_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    queries_received: dict[str, int] = field(default_factory=dict)
    queries_sent: int = 0
    queries_resent: int = 0
    """Lookup queries sent a second time after going unanswered past the soft timeout."""
    responses_received: int = 0
    errors_received: int = 0
    errors_sent: int = 0
    malformed_received: int = 0
    unmatched_received: int = 0
    """Responses and errors with no pending transaction (late, spoofed or duplicated)."""
    timeouts: int = 0
    send_failures: int = 0
    receive_path_failures: int = 0
    """Internal errors caught in the receive path (should stay 0)."""
    id_changes: int = 0
    """Moves to a new node id after our external IP became known (BEP 42)."""
    rate_limited: int = 0
    """Datagrams dropped unread because their IP exceeded the inbound rate."""
    blocked: int = 0
    """Datagrams dropped because their IP is on the blocklist."""
    replies_dropped: int = 0
    """Answers not sent because the global reply budget was spent."""


@dataclass(slots=True)
class LookupSummary:
    """What a lookup did: returned by `PeerLookup.summary`, `find_node_lookup` and `announce`."""

    target: NodeId
    elapsed: float
    time_to_first_peer: float | None
    queried: int
    """Nodes queried."""
    answered: int
    timed_out: int
    peers: int
    """Distinct peers found (get_peers only)."""
    closest: list[NodeInfo]
    """The closest nodes that answered, nearest first."""
    scrape: ScrapeEstimate | None = None
    """BEP 33 (get_peers with scrape=True): seeds and peers estimated from the nodes' filters."""
    hops: int | None = None
    """Hops to the closest node that answered: 0 when it came from our own routing table,
    h + 1 when it was learned from the reply of a node at hop h (None: nobody answered)."""
    max_hop: int = 0
    """The largest hop of any node that answered."""
    first_peer_hop: int | None = None
    """The hop of the node whose reply carried the first peer (get_peers only)."""
    resent: int = 0
    """Queries sent a second time after a silence (queried + resent: datagrams sent)."""


@dataclass(slots=True)
class AnnounceResult:
    """Outcome of `DHTNode.announce`."""

    summary: LookupSummary
    announced_to: list[NodeInfo]
    """Nodes that accepted the announce."""
    failed: int
    """Nodes that returned a token but did not accept the announce (error or timeout)."""


@dataclass(slots=True)
class ItemResult:
    """Outcome of `DHTNode.get_item` (BEP 44)."""

    item: Item | None
    """The item found (for a mutable one, the highest seq seen); None when none was."""
    summary: LookupSummary
    copies: int
    """Nodes that returned this very item (same seq and value)."""
    invalid: int
    """Replies carrying an item that failed verification (wrong hash, key or signature)."""


@dataclass(slots=True)
class PutResult:
    """Outcome of `DHTNode.put_immutable` / `put_mutable` (BEP 44)."""

    item: Item
    """The item that was put (its `target` is where it lives)."""
    summary: LookupSummary
    stored_on: list[NodeInfo]
    """Nodes that accepted the put."""
    asked: int
    """How many of the k closest nodes (those that gave a token) the put was sent to."""
    errors: dict[int, int]
    """KRPC error code -> how many nodes refused with it (302: their seq is higher...)."""
    timed_out: int


_QUICK_METHOD_NAMES = {b"ping": "ping", b"find_node": "find_node", b"get_peers": "get_peers"}


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, node: "DHTNode") -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.node.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable...) carry no usable address on a UDP socket.
        log.debug("socket error: %s", exc)


class DHTNode:
    """A Mainline DHT node on one UDP socket.

    `bind` is `(ip, port)` or `"ip:port"` (port 0: any free port). `bootstrap` lists
    `host:port` strings or `(host, port)` pairs to join through; None means the public
    routers of `DEFAULT_BOOTSTRAP`, and an explicit list replaces them entirely.
    `state_file` keeps the node id and good nodes across runs. A `read_only` node (BEP 43)
    puts `ro`=1 in its queries and answers no queries: right for one-shot lookups.
    `clock` (seconds, monotonic; default `time.monotonic`) and `rng` can be injected for
    tests and simulations: a node run on a virtual-time event loop gets `clock=loop.time`.
    """

    def __init__(self, bind: Address | str = ("0.0.0.0", 0), *,
                 bootstrap: Sequence[str | Address] | None = None,
                 node_id: NodeId | bytes | None = None, state_file: str | None = None,
                 read_only: bool = False, config: NodeConfig | None = None,
                 rng: _random.Random | None = None, blocklist: Blocklist | None = None,
                 peer_store: PeerStore | None = None, item_store: ItemStore | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.clock: Callable[[], float] = clock or time.monotonic
        """Where the node reads the time (seconds); every expiry and timeout uses it."""
        self.config = config or NodeConfig()
        self._bind = parse_host_port(bind, allow_any_port=True) if isinstance(bind, str) else (bind[0], bind[1])
        self._use_default_routers = bootstrap is None
        self._bootstrap_spec = list(DEFAULT_BOOTSTRAP if bootstrap is None else bootstrap)
        self.state_file = state_file
        self.read_only = read_only
        self._rng = rng or _random.SystemRandom()
        self._saved_nodes: list[NodeInfo] = []
        self._explicit_id = node_id is not None
        if node_id is None and state_file:
            saved = load_state(state_file, self.config.max_saved_nodes)
            node_id = saved.node_id
            self._saved_nodes = saved.nodes
        self.node_id = NodeId(node_id) if node_id is not None else NodeId.random(self._rng)
        self.stats = NodeStats()
        self.routing_table = RoutingTable(self.node_id, k=self.config.k, verify=is_secure_id,
                                          enforce=self.config.enforce_node_id,
                                          prefer_verified=self.config.prefer_verified_node_ids)
        self._ip_voter = ExternalIpVoter(self.config.external_ip_votes)
        self.blocklist = blocklist
        self._inbound = PerIpLimiter(self.config.inbound_rate, self.config.inbound_burst,
                                     self.config.max_limited_ips)
        self._reply_budget = TokenBucket.full(self.config.reply_bytes_per_second,
                                              self.config.reply_bytes_per_second, self._now())
        self.in_flight: dict[str, int] = {}
        """Our queries waiting for an answer, by method."""
        self._waiting_on: dict[str, int] = {}
        """IP -> our transactions open with it: its replies bypass the inbound limit."""
        self.peer_store = peer_store if peer_store is not None else PeerStore(
            self.config.max_infohashes, self.config.max_peers_per_infohash, self.config.peer_lifetime)
        self._tokens = TokenManager(self._now(), self._rng, self.config.token_rotation)
        self.item_store = item_store if item_store is not None else ItemStore(
            self.config.max_items, self.config.item_lifetime)
        """BEP 44 items this node stores for others."""
        # Which peers and infohash samples a reply lists is no secret, and a seeded PRNG
        # picks 50 of a full swarm in 10 µs where SystemRandom's system calls take 43 µs.
        self._handler = QueryHandler(self.node_id, self.routing_table, self._tokens,
                                     self.peer_store, _random.Random(self._rng.getrandbits(64)),
                                     self.config.version, self.item_store)
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[tuple[bytes, Address], asyncio.Future] = {}
        self._slots = asyncio.Semaphore(self.config.max_pending)
        self._router_addresses: set[Address] = set()
        self._verifying: set[Address] = set()
        self._verified_at: dict[str, float] = {}
        """IP -> when we last pinged it to verify a querier (bounded, oldest first out)."""
        self._query_observers: list[Callable[[Query, Address], None]] = []
        self._last_bootstrap = self._now()
        self._tasks: set[asyncio.Task] = set()
        self._maintenance: asyncio.Task | None = None
        self._closed = False

    # --- lifecycle ----------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock()

    async def start(self, transport: asyncio.DatagramTransport | None = None) -> None:
        """Open the UDP socket and start maintenance. Does not bootstrap (see `bootstrap`).

        With `transport`, no socket is opened: the node sends through `transport.sendto`
        (its `get_extra_info("sockname")` is the node's address, and closing the node
        closes it), and whoever owns the transport hands received datagrams to
        `datagram_received`. This runs a node over a wrapped socket or a simulated network.
        """
        if self._transport is not None:
            return
        if transport is not None:
            self._transport = transport
            self._start_maintenance()
            return
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if self.is_ipv6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # IPv6 only: the IPv4 side of a dual-stack node has its own socket and table.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            with contextlib.suppress(OSError):  # room for bursts: a full buffer drops everyone's
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            sock.bind(self._bind)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        try:
            self._transport = SocketDatagramTransport(loop, sock, self.datagram_received)
        except NotImplementedError:  # a loop without add_reader (Windows' proactor)
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self),
                                                                     sock=sock)
        self._start_maintenance()

    def _start_maintenance(self) -> None:
        self._maintenance = asyncio.create_task(self._maintain(), name="mldht-maintenance")
        log.info("node %s listening on %s%s", self.node_id.hex(), format_address(self.address),
                 " (read-only)" if self.read_only else "")

    async def close(self) -> None:
        """Save state, cancel every task and pending query, and close the socket."""
        if self._closed:
            return
        self._closed = True
        if self.state_file and self._transport is not None:
            self.save()
        tasks = [*self._tasks, *([self._maintenance] if self._maintenance else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TransportClosed("node closed"))
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> "DHTNode":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    @property
    def address(self) -> Address:
        """The local (ip, port) the socket is bound to."""
        if self._transport is None:
            raise TransportClosed("node not started")
        sockname = self._transport.get_extra_info("sockname")
        return (sockname[0], sockname[1])

    def save(self) -> None:
        """Write the node id and its good nodes to `state_file` (atomically)."""
        if not self.state_file:
            return
        now = self._now()
        nodes = self.routing_table.closest(self.node_id, self.config.max_saved_nodes, now=now,
                                           include_questionable=False)
        try:
            save_state(self.state_file, self.node_id, nodes)
        except OSError as exc:
            log.warning("could not save state to %s: %s", self.state_file, exc)

    def _spawn(self, coroutine, name: str) -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, MldhtError):
                log.warning("background task %s failed: %r", task.get_name(), exc)

    # --- sending and receiving ----------------------------------------------------------

    def _send_data(self, data: bytes, address: Address) -> None:
        if self._transport is None:
            raise TransportClosed("node not started")
        try:
            self._transport.sendto(data, address)
        except (OSError, ValueError) as exc:
            self.stats.send_failures += 1
            log.debug("send to %s failed: %s", format_address(address), exc)
            return
        self.stats.datagrams_sent += 1
        self.stats.bytes_sent += len(data)

    def _send_reply(self, message, address: Address, now: float) -> None:
        """Send an answer within the global reply budget (dropped beyond it)."""
        self._send_encoded_reply(encode_message(message), address, now)

    def _send_encoded_reply(self, data: bytes, address: Address, now: float) -> None:
        if self.config.reply_bytes_per_second > 0 and not self._reply_budget.allow(now, len(data)):
            self.stats.replies_dropped += 1
            return
        self._send_data(data, address)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        """Handle one datagram that arrived from `addr` (called by the socket's protocol, or by
        the owner of a transport given to `start`). Never raises for what is in `data`."""
        source: Address = (normalize_ip(addr[0]), addr[1])
        self.stats.datagrams_received += 1
        self.stats.bytes_received += len(data)
        if self.blocklist is not None and source[0] in self.blocklist:
            self.stats.blocked += 1
            return
        limited = self.config.inbound_rate > 0
        # Cheap first: an IP we are not waiting on is charged before anything is decoded.
        charged = limited and source[0] not in self._waiting_on
        if charged and not self._inbound.allow(source[0], self._now()):
            self.stats.rate_limited += 1
            return
        try:
            self._dispatch(data, source, charge=limited and not charged)
        except Exception:  # nothing from the wire may break the receive path
            self.stats.receive_path_failures += 1
            log.exception("error handling datagram from %s", format_address(source))

    def _over_limit(self, source: Address, now: float) -> bool:
        if self._inbound.allow(source[0], now):
            return False
        self.stats.rate_limited += 1
        return True

    def _dispatch(self, data: bytes, source: Address, charge: bool = False) -> None:
        """Handle one datagram. `charge`: it came from an IP we are waiting on, so only a
        matched reply is free; anything else still counts against the IP's rate."""
        now = self._now()
        try:
            value = decode_datagram(data)
            if (type(value) is dict and value.get(b"y") == b"q" and not self.read_only
                    and not self._query_observers):
                reply = self._handler.quick_reply(value, source, now)
                if reply is not None:  # a plain ping, find_node or get_peers: answered
                    if not (charge and self._over_limit(source, now)):
                        self._answered_quickly(value, reply, source, now)
                    return
            message = interpret_message(value, data)
        except KrpcDecodeError as exc:
            if charge and self._over_limit(source, now):
                return
            self.stats.malformed_received += 1
            if exc.transaction_id is not None and exc.is_query and not self.read_only:
                self.stats.errors_sent += 1
                self._send_reply(Error(transaction_id=exc.transaction_id,
                                       version=self.config.version, code=PROTOCOL_ERROR,
                                       message=str(exc)), source, now)
            elif exc.transaction_id is not None:
                pending = self._pending.get((exc.transaction_id, source))
                if pending is not None and not pending.done():
                    pending.set_exception(
                        RemoteError(PROTOCOL_ERROR, f"malformed reply: {exc}"))
            return
        if isinstance(message, Query):
            if charge and self._over_limit(source, now):
                return
            self._on_query(message, source, now)
            return
        pending = self._pending.get((message.transaction_id, source))
        if pending is None or pending.done():
            if charge:
                self._over_limit(source, now)
            self.stats.unmatched_received += 1
            return
        if isinstance(message, Response):
            self.stats.responses_received += 1
            if source not in self._router_addresses:
                known = self.routing_table.by_ip(source[0])
                if known is None or known.id == message.sender_id or \
                        self.routing_table.id_changed(source, message.sender_id, now):
                    self._heard_from(NodeInfo(message.sender_id, *source), now, responded=True)
            if message.requester is not None:
                self._vote_external_ip(source, message.requester[0])
            pending.set_result(message)
        else:
            self.stats.errors_received += 1
            pending.set_exception(RemoteError(message.code, message.message))

    def _answered_quickly(self, query: dict, reply: bytes, source: Address, now: float) -> None:
        """What `_on_query` does, for a query `QueryHandler.quick_reply` answered."""
        method = _QUICK_METHOD_NAMES[query[b"q"]]
        counts = self.stats.queries_received
        counts[method] = counts.get(method, 0) + 1
        self._send_encoded_reply(reply, source, now)
        if query.get(b"ro") != 1:
            self._note_querier(NodeId(query[b"a"][b"id"]), source, now)

    def observe_queries(self, observer: Callable[[Query, Address], None]) -> Callable[[], None]:
        """Call `observer(query, source)` for every well-formed query received, before it is
        answered: what a crawler or a test bed sees of who asks what. The observer must not
        raise. While any is registered, plain queries skip the quick reply path (they are
        decoded into `Query` objects for it). Returns a function that removes the observer.
        """
        self._query_observers.append(observer)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._query_observers.remove(observer)
        return remove

    def _on_query(self, query: Query, source: Address, now: float) -> None:
        for observer in self._query_observers:
            observer(query, source)
        method = query.name.decode("ascii", "replace") if hasattr(query, "name") else query.method.decode()
        counts = self.stats.queries_received
        if method in counts or len(counts) < 64:  # bounded: unknown method names are many
            counts[method] = counts.get(method, 0) + 1
        if self.read_only:
            return  # BEP 43: read-only nodes do not answer
        reply = self._handler.handle(query, source, now)
        if isinstance(reply, Error):
            self.stats.errors_sent += 1
        self._send_reply(reply, source, now)
        if not query.read_only:
            self._note_querier(query.sender_id, source, now)

    def _note_querier(self, sender_id: NodeId, source: Address, now: float) -> None:
        """A (not read-only) node queried us: the table hears of it, and one that has never
        answered us is pinged (as libtorrent does) so that it can become a routing entry."""
        querier = NodeInfo(sender_id, source[0], source[1])
        # Not `_heard_from`: a querier never makes the table ask for pings of its nodes.
        result = self.routing_table.heard_from(querier, now, responded=False)
        if (not result.verified and result.outcome is not InsertOutcome.REJECTED
                and len(self._verifying) < MAX_VERIFY_PINGS
                and source not in self._verifying and self._may_verify(source[0], now)):
            self._spawn(self._verify(querier), "mldht-verify")

    def _may_verify(self, ip: str, now: float) -> bool:
        """At most one verification ping per IP per VERIFY_INTERVAL: a sender that keeps
        changing its id must not make us ping it for every query (bounded memory)."""
        last = self._verified_at.get(ip)
        if last is not None and now - last < VERIFY_INTERVAL:
            return False
        self._verified_at.pop(ip, None)
        self._verified_at[ip] = now
        while len(self._verified_at) > MAX_VERIFY_MEMORY:
            del self._verified_at[next(iter(self._verified_at))]
        return True

    def pair_with(self, sibling: "DHTNode") -> None:
        """Make two nodes of different address families one dual-stack node (BEP 32): each
        answers `want` for the other family from the other's routing table."""
        if self.is_ipv6 == sibling.is_ipv6:
            raise ValueError("a sibling must be of the other address family")
        self._handler.sibling_table = lambda: sibling.routing_table
        sibling._handler.sibling_table = lambda: self.routing_table

    @property
    def is_ipv6(self) -> bool:
        return ":" in self._bind[0]

    @property
    def external_ip(self) -> str | None:
        """Our IP as other nodes see it, once enough of them agree (BEP 42); else None."""
        return self._ip_voter.external_ip

    def _vote_external_ip(self, voter: Address, reported_ip: str) -> None:
        changed = self._ip_voter.vote(voter[0], normalize_ip(reported_ip))
        if changed is None:
            return
        log.info("external IP is %s (agreed by %d subnets)", changed,
                 self._ip_voter.tally().get(changed, 0))
        if (self.config.adopt_secure_id and not self._explicit_id
                and not is_secure_id(self.node_id, changed)):
            self._change_id(secure_node_id(changed, self._rng))

    def _change_id(self, new_id: NodeId) -> None:
        """Move to `new_id` keeping every known node, then look the new id up."""
        log.info("node id %s -> %s (BEP 42)", self.node_id.hex(), new_id.hex())
        self.node_id = new_id
        self.routing_table = self.routing_table.with_own_id(new_id)
        self._handler.own_id = new_id
        self._handler.table = self.routing_table
        self.stats.id_changes += 1
        if not self._closed and self._transport is not None:
            self._spawn(self.find_node_lookup(new_id, timeout=self.config.bootstrap_timeout),
                        "mldht-new-id-lookup")

    def _acceptable(self, node: NodeInfo) -> bool:
        """Never a blocklisted node; with BEP 42 enforcement, only ids that match their IP."""
        if self.blocklist is not None and node.ip in self.blocklist:
            return False
        return not self.config.enforce_node_id or is_secure_id(node.id, node.ip)

    def _heard_from(self, node: NodeInfo, now: float, responded: bool) -> InsertResult:
        result = self.routing_table.heard_from(node, now, responded)
        for questionable in result.ping:
            self._spawn(self._verify(questionable), "mldht-verify")
        return result

    async def _verify(self, node: NodeInfo) -> None:
        self._verifying.add(node.address)
        try:
            await self.ping(node.address)
        except MldhtError:
            pass
        finally:
            self._verifying.discard(node.address)

    def _new_transaction_id(self, address: Address) -> bytes:
        while True:
            tid = self._rng.getrandbits(8 * TRANSACTION_ID_LENGTH).to_bytes(TRANSACTION_ID_LENGTH, "big")
            if (tid, address) not in self._pending:
                return tid

    # --- queries ------------------------------------------------------------------------

    async def query(self, address: Address, query: Query, timeout: float | None = None, *,
                    resend_after: float | None = None,
                    resend_if: Callable[[], bool] | None = None) -> Response:
        """Send `query` to `address` and wait for its response.

        The transaction id is chosen here. Raises `QueryTimeout`, or `RemoteError` when the
        node answers with a KRPC error. With `resend_after` (seconds), a query still
        unanswered by then is sent once more, same transaction id (when `resend_if()`
        agrees): one lost datagram then costs a round trip, not the node.
        """
        if self._transport is None:
            raise TransportClosed("node not started")
        timeout = self.config.query_timeout if timeout is None else timeout
        address = (normalize_ip(address[0]), address[1])
        if self.blocklist is not None and address[0] in self.blocklist:
            raise QueryTimeout(f"{format_address(address)} is blocklisted: not queried")
        try:
            async with asyncio.timeout(timeout):
                async with self._slots:
                    key = (self._new_transaction_id(address), address)
                    query.transaction_id = key[0]
                    query.read_only = self.read_only
                    query.version = self.config.version
                    future = asyncio.get_running_loop().create_future()
                    self._pending[key] = future
                    ip = address[0]
                    self._waiting_on[ip] = self._waiting_on.get(ip, 0) + 1
                    method = query.method.decode() or "unknown"
                    self.in_flight[method] = self.in_flight.get(method, 0) + 1
                    try:
                        self.stats.queries_sent += 1
                        data = encode_message(query)
                        self._send_data(data, address)
                        if resend_after is not None:
                            await asyncio.wait((future,), timeout=resend_after)
                            if not future.done() and (resend_if is None or resend_if()):
                                self.stats.queries_resent += 1
                                self._send_data(data, address)
                        return await future
                    finally:
                        self._pending.pop(key, None)
                        left = self._waiting_on.get(ip, 1) - 1
                        if left:
                            self._waiting_on[ip] = left
                        else:
                            self._waiting_on.pop(ip, None)
                        self.in_flight[method] -= 1
        except TimeoutError:
            self.stats.timeouts += 1
            self.routing_table.on_timeout(address, self._now())
            raise QueryTimeout(f"{format_address(address)} did not answer "
                               f"{query.method.decode() or 'query'} within {timeout:g} s") from None

    async def ping(self, address: Address | str, timeout: float | None = None) -> NodeId:
        """Ping a node; returns its id."""
        address = await self._resolve_one(address)
        response = await self.query(address, Ping(transaction_id=b"", sender_id=self.node_id),
                                    timeout)
        return response.sender_id

    async def sample_infohashes(self, address: Address | str, target: NodeId | bytes | None = None,
                                timeout: float | None = None) -> Sample:
        """BEP 51: a sample of the infohashes `address` stores, how many it stores, when to
        ask again, and its nodes closest to `target` (random when not given). Raises
        `RemoteError`/`QueryTimeout`, or `InvalidSample` when the reply is not a BEP 51 one
        (a node without BEP 51 answers like find_node, without `samples`)."""
        address = await self._resolve_one(address)
        query = SampleInfohashes(transaction_id=b"", sender_id=self.node_id,
                                 target=NodeId(target) if target is not None
                                 else NodeId.random(self._rng))
        return Sample.from_response(await self.query(address, query, timeout))

    # --- lookups ------------------------------------------------------------------------

    async def _drive(self, lookup: Lookup, make_query: Callable[[], Query],
                     on_response: Callable[[Address, Response, list[Address]], None] | None,
                     deadline: float, stop: Callable[[], bool] | None = None) -> None:
        """Run `lookup` to completion (or `deadline`, or until `stop()`), `make_query()`
        giving each query."""
        wake = asyncio.Event()
        running: set[asyncio.Task] = set()
        own_address = self.address
        ipv6 = ":" in own_address[0]

        async def ask(target: NodeInfo | Address) -> None:
            address = target.address if isinstance(target, NodeInfo) else target
            try:
                response = await self.query(
                    address, make_query(),
                    resend_after=lookup.soft_timeout if self.config.lookup_resends else None,
                    resend_if=lambda: lookup.claim_resend(address))
            except (MldhtError, OSError):
                lookup.on_failure(address, self._now())
            else:
                if not self._acceptable(NodeInfo(response.sender_id, *address)):
                    # An id it may not have (BEP 42, enforced) would rank it, and what it
                    # lists, wherever it likes: a Sybil's way to the front of a lookup.
                    lookup.on_failure(address, self._now())
                    return
                listed = response.nodes6 if ipv6 else response.nodes
                nodes = [node for node in listed or []
                         if node.id != self.node_id and node.address != own_address
                         and is_contactable(node.address, address) and self._acceptable(node)]
                fresh = lookup.on_reply(address, response.sender_id, self._now(), nodes,
                                        response.token,
                                        response.values or [])
                if on_response is not None:
                    on_response(address, response, fresh)
            finally:
                wake.set()

        try:
            while not lookup.done and not (stop is not None and stop()):
                now = self._now()
                if now >= deadline:
                    break
                for target in lookup.next_queries(now):
                    task = asyncio.create_task(ask(target))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if lookup.done or not running:
                    break
                next_soft = lookup.next_deadline()
                wait = deadline - now if next_soft is None else min(deadline, next_soft) - now
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0.01)):
                        await wake.wait()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _summary(self, lookup: Lookup, first_peer: float | None) -> LookupSummary:
        closest = lookup.closest_answered()
        return LookupSummary(
            target=lookup.target, elapsed=self._now() - lookup.started,
            time_to_first_peer=None if first_peer is None else first_peer - lookup.started,
            queried=lookup.stats.queried, answered=lookup.stats.answered,
            timed_out=lookup.stats.failed, peers=len(lookup.stats.peers),
            closest=[candidate.info for candidate in closest], hops=closest[0].hop if closest else None,
            max_hop=lookup.stats.max_hop, first_peer_hop=lookup.stats.first_peer_hop,
            resent=lookup.stats.resent)

    async def _new_lookup(self, target: NodeId) -> Lookup:
        seeds = self.routing_table.closest(target, count=self.config.k * 4)
        bootstrap: list[Address] = []
        if len(seeds) < self.config.k:
            bootstrap = await self._bootstrap_addresses()
        return Lookup(target, seeds, self._now(), bootstrap=bootstrap, k=self.config.k,
                      alpha=self.config.alpha, soft_timeout=self.config.soft_timeout,
                      adaptive_timeout=self.config.adaptive_soft_timeout,
                      wait_for_slow=self.config.lookup_waits_for_slow)

    async def find_node_lookup(self, target: NodeId | bytes, timeout: float = 30.0) -> LookupSummary:
        """Iterative find_node towards `target`; the summary lists the closest nodes found."""
        target = NodeId(target)
        lookup = await self._new_lookup(target)
        await self._drive(lookup, lambda: FindNode(transaction_id=b"", sender_id=self.node_id,
                                                   target=target),
                          None, self._now() + timeout)
        return self._summary(lookup, None)

    async def find_node(self, target: NodeId | bytes, timeout: float = 30.0) -> list[NodeInfo]:
        """The k closest live nodes to `target`, by iterative lookup."""
        return (await self.find_node_lookup(target, timeout)).closest

    def get_peers(self, info_hash: InfoHash | bytes, timeout: float = 30.0, *,
                  scrape: bool = False) -> "PeerLookup":
        """Start a get_peers lookup; iterate the result with `async for` to get peers as they
        arrive. With `scrape` (BEP 33) the summary also estimates seeds and peers."""
        return PeerLookup(self, InfoHash(info_hash), timeout, scrape)

    async def _get_peers_lookup(self, info_hash: InfoHash, timeout: float,
                                on_peers: Callable[[list[Address]], None],
                                merger: ScrapeMerger | None = None) -> tuple[Lookup, float | None]:
        lookup = await self._new_lookup(info_hash)
        first_peer: list[float] = []

        def on_response(address: Address, response: Response, fresh: list[Address]) -> None:
            if merger is not None:
                merger.add(response.extra)
            if fresh:
                if not first_peer:
                    first_peer.append(self._now())
                on_peers(fresh)

        await self._drive(lookup, lambda: GetPeers(transaction_id=b"", sender_id=self.node_id,
                                                   info_hash=info_hash, scrape=merger is not None),
                          on_response, self._now() + timeout)
        return lookup, (first_peer[0] if first_peer else None)

    async def announce(self, info_hash: InfoHash | bytes, port: int | None = None, *,
                       implied_port: bool = False, seed: bool = False,
                       timeout: float = 30.0) -> AnnounceResult:
        """Find the k closest nodes to `info_hash` and announce `port` (or the implied UDP port)."""
        if port is None and not implied_port:
            raise ValueError("give a port, or implied_port=True")
        info_hash = InfoHash(info_hash)
        deadline = self._now() + timeout
        lookup, first_peer = await self._get_peers_lookup(info_hash, timeout, lambda peers: None)
        summary = self._summary(lookup, first_peer)
        targets = [candidate for candidate in lookup.closest_answered(self.config.k, with_token=True)
                   if self._acceptable(candidate.info)]

        # With implied_port, `port` still carries our UDP port: aria2 ignores implied_port.
        announced_port = port if port is not None else self.address[1]

        async def announce_to(candidate) -> bool:
            query = AnnouncePeer(transaction_id=b"", sender_id=self.node_id, info_hash=info_hash,
                                 token=candidate.token, port=announced_port,
                                 implied_port=implied_port, seed=seed)
            try:
                await self.query(candidate.address,
                                 query, timeout=max(0.1, min(self.config.query_timeout,
                                                             deadline - self._now())))
                return True
            except (MldhtError, OSError):
                return False

        results = await asyncio.gather(*(announce_to(candidate) for candidate in targets))
        accepted = [candidate.info for candidate, ok in zip(targets, results) if ok]
        return AnnounceResult(summary=summary, announced_to=accepted,
                              failed=len(results) - len(accepted))

    # --- BEP 44 items ----------------------------------------------------------------------

    async def _item_lookup(self, target: NodeId, salt: bytes, timeout: float,
                           stop_at_immutable: bool) -> tuple[Lookup, dict[Address, Item], int]:
        """A `get` lookup towards `target`: the verified item each node returned, and how
        many replies carried an item that failed verification."""
        lookup = await self._new_lookup(target)
        found: dict[Address, Item] = {}
        invalid = 0

        def on_response(address: Address, response: Response, fresh: list[Address]) -> None:
            nonlocal invalid
            if b"v" not in response.extra:
                return  # no item here: just nodes
            item = _item_in(response, salt)
            if item is not None and item.is_valid_for(target):
                found[address] = item
            else:
                invalid += 1

        def immutable_found() -> bool:
            return stop_at_immutable and any(not item.is_mutable for item in found.values())

        await self._drive(lookup, lambda: Get(transaction_id=b"", sender_id=self.node_id,
                                              target=target),
                          on_response, self._now() + timeout, stop=immutable_found)
        return lookup, found, invalid

    @staticmethod
    def _latest(found: dict[Address, Item]) -> Item | None:
        """An immutable item if one was found, else the mutable item with the highest seq."""
        items = list(found.values())
        for item in items:
            if not item.is_mutable:
                return item
        return max(items, key=lambda item: item.seq, default=None)

    async def get_item(self, target: bytes, salt: bytes = b"", timeout: float = 30.0) -> ItemResult:
        """BEP 44: find the item stored under `target` (an immutable item's hash, or
        `bep44.mutable_target(public_key, salt)`). Every item is verified before it is
        believed; for a mutable item the one with the highest seq is returned, and `salt`
        must be the one it was put with. Stops at the first genuine immutable item."""
        target = NodeId(target)
        lookup, found, invalid = await self._item_lookup(target, salt, timeout, True)
        best = self._latest(found)
        copies = sum(1 for item in found.values() if item == best)
        return ItemResult(best, self._summary(lookup, None), copies, invalid)

    async def put_immutable(self, value, timeout: float = 30.0) -> PutResult:
        """BEP 44: store `value` (any bencodable value; str is stored as UTF-8 bytes) under
        the SHA-1 of its bencoding on the k closest nodes that give us a token."""
        item = Item.immutable(value)
        return await self._put(item.target, b"", lambda current: item, None, timeout)

    async def put_mutable(self, keys, value, *, salt: bytes = b"", seq: int | None = None,
                          cas: int | None = None, timeout: float = 30.0) -> PutResult:
        """BEP 44: sign `value` with `keys` (a `bep44.KeyPair`) and store it under
        SHA-1(public key + salt). Without `seq`, the highest seq found on the network plus
        one (1 for a new item). `cas`: the seq the put must replace (nodes holding another
        answer 301)."""
        target = mutable_target(keys.public_key, salt)

        def make(current: Item | None) -> Item:
            next_seq = seq if seq is not None else (current.seq + 1 if current else 1)
            return Item.mutable(keys, value, next_seq, salt)

        return await self._put(target, salt, make, cas, timeout)

    async def _put(self, target: bytes, salt: bytes, make: Callable[[Item | None], Item],
                   cas: int | None, timeout: float) -> PutResult:
        deadline = self._now() + timeout
        lookup, found, _ = await self._item_lookup(NodeId(target), salt, timeout, False)
        item = make(self._latest(found))
        problem = item.problem()
        if problem is not None:
            raise InvalidInput(f"cannot put this item: {problem[1]}")
        summary = self._summary(lookup, None)
        targets = [candidate for candidate in lookup.closest_answered(self.config.k, with_token=True)
                   if self._acceptable(candidate.info)]
        errors: dict[int, int] = {}
        timed_out = 0

        async def put_to(candidate) -> bool:
            nonlocal timed_out
            query = Put(transaction_id=b"", sender_id=self.node_id, token=candidate.token,
                        value=item.value, encoded_value=item.encoded,
                        public_key=item.public_key, signature=item.signature,
                        seq=item.seq if item.is_mutable else None, salt=item.salt,
                        cas=cas if item.is_mutable else None)
            try:
                await self.query(candidate.address, query, timeout=max(
                    0.1, min(self.config.query_timeout, deadline - self._now())))
                return True
            except RemoteError as exc:
                errors[exc.code] = errors.get(exc.code, 0) + 1
            except (MldhtError, OSError):
                timed_out += 1
            return False

        results = await asyncio.gather(*(put_to(candidate) for candidate in targets))
        return PutResult(item=item, summary=summary,
                         stored_on=[c.info for c, ok in zip(targets, results) if ok],
                         asked=len(targets), errors=errors, timed_out=timed_out)

    # --- bootstrap and maintenance ------------------------------------------------------

    async def _resolve_one(self, spec: str | Address) -> Address:
        host, port = parse_host_port(spec) if isinstance(spec, str) else spec
        addresses = await self._resolve(host, port)
        if not addresses:
            raise MldhtError(f"could not resolve {host}")
        return addresses[0]

    async def _resolve(self, host: str, port: int) -> list[Address]:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET
        try:
            async with asyncio.timeout(5.0):
                infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        except (OSError, TimeoutError) as exc:
            log.warning("cannot resolve %s: %s", host, exc)
            return []
        return list(dict.fromkeys((normalize_ip(str(info[4][0])), int(info[4][1])) for info in infos))

    async def _bootstrap_addresses(self) -> list[Address]:
        addresses: list[Address] = []
        for spec in self._bootstrap_spec:
            try:
                host, port = parse_host_port(spec) if isinstance(spec, str) else spec
            except ValueError as exc:
                log.warning("ignoring bootstrap entry %r: %s", spec, exc)
                continue
            if _is_ip_literal(host) and (":" in host) != self.is_ipv6:
                continue  # the other family's node (a dual-stack sibling) takes this one
            resolved = [address for address in await self._resolve(host, port)
                        if self.blocklist is None or address[0] not in self.blocklist]
            if self._use_default_routers:
                self._router_addresses.update(resolved)
            addresses.extend(resolved)
        return addresses

    async def bootstrap(self, timeout: float | None = None) -> int:
        """Join the DHT: re-verify saved nodes, ask the bootstrap nodes, look up our own id
        and refresh the buckets. Returns the number of nodes in the routing table."""
        timeout = self.config.bootstrap_timeout if timeout is None else timeout
        deadline = self._now() + timeout
        if self._saved_nodes:
            saved, self._saved_nodes = self._saved_nodes, []
            await asyncio.gather(*(self._verify(node) for node in saved))
        # A router that has just met us may know few verified nodes yet: when the table
        # stays under k, ask again shortly (twice at most, to keep tiny networks fast).
        for retry_delay in (0.5, 1.0, None):
            await self.find_node_lookup(self.node_id, timeout=max(deadline - self._now(), 0.1))
            if retry_delay is None or len(self.routing_table) >= self.config.k:
                break
            if deadline - self._now() <= retry_delay:
                break
            await asyncio.sleep(retry_delay)
        self._last_bootstrap = self._now()
        refreshes = []
        for index in range(len(self.routing_table.buckets) - 1):
            if len(self.routing_table.buckets[index].nodes) < self.config.k:
                target = random_id_in_bucket(self.node_id, index, self._rng)
                refreshes.append(self.find_node_lookup(target, timeout=max(deadline - self._now(), 0.1)))
        for batch_start in range(0, len(refreshes), 4):  # a few at a time: be gentle
            await asyncio.gather(*refreshes[batch_start:batch_start + 4])
        log.info("bootstrapped: %d nodes in the routing table", len(self.routing_table))
        return len(self.routing_table)

    async def _maintain(self) -> None:
        """Periodic upkeep: peer expiry, bucket refresh, pings of questionable nodes, saving."""
        config = self.config
        last_save = last_expiry = self._now()
        sparse_backoff = 30.0
        while True:
            await asyncio.sleep(config.maintenance_interval)
            now = self._now()
            try:
                if now - last_expiry >= 60.0:
                    self.peer_store.expire(now)
                    self.item_store.expire(now)
                    last_expiry = now
                if self.read_only and not len(self.routing_table):
                    continue
                for node in self.routing_table.questionable(now, limit=8):
                    self._spawn(self._verify(node), "mldht-verify")
                if (len(self.routing_table) < config.k and not self.read_only
                        and now - self._last_bootstrap >= sparse_backoff):
                    # Too few nodes to be useful: join again, backing off up to the refresh period.
                    self._last_bootstrap = now
                    sparse_backoff = min(sparse_backoff * 2, config.bucket_refresh)
                    self._spawn(self.find_node_lookup(self.node_id), "mldht-rejoin")
                stale = self.routing_table.stale_buckets(now, config.bucket_refresh)
                if stale and len(self.routing_table):
                    index = stale[0]
                    self.routing_table.touch_bucket(index, now)
                    target = random_id_in_bucket(self.node_id, index, self._rng)
                    self._spawn(self.find_node_lookup(target), "mldht-refresh")
                if self.state_file and now - last_save >= config.save_interval:
                    self.save()
                    last_save = now
            except Exception:
                log.exception("maintenance step failed")


def _item_in(response: Response, salt: bytes) -> Item | None:
    """The BEP 44 item a `get` reply carries (still to be verified); None when its fields
    are malformed."""
    extra = response.extra
    try:
        encoded = bencode_value(extra[b"v"])
    except Exception:  # a value that cannot be encoded back: not an item
        return None
    public_key, signature, seq = extra.get(b"k"), extra.get(b"sig"), extra.get(b"seq")
    if public_key is None and signature is None:
        return Item(value=extra[b"v"], encoded=encoded)
    if not (isinstance(public_key, bytes) and isinstance(signature, bytes)
            and isinstance(seq, int)):
        return None
    return Item(value=extra[b"v"], encoded=encoded, public_key=public_key, salt=salt, seq=seq,
                signature=signature)


class PeerLookup:
    """A running get_peers lookup: an async iterator of `(ip, port)` peers as they arrive.

    After iteration ends, `summary` holds the `LookupSummary`. Leaving the loop early
    (break) and calling `aclose()` stops the lookup.
    """

    def __init__(self, node: DHTNode, info_hash: InfoHash, timeout: float,
                 scrape: bool = False) -> None:
        self.node = node
        self.info_hash = info_hash
        self.timeout = timeout
        self._merger = ScrapeMerger() if scrape else None
        self.summary: LookupSummary | None = None
        self._queue: asyncio.Queue[Address | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def __aiter__(self) -> AsyncIterator[Address]:
        return self

    async def _run(self) -> None:
        try:
            lookup, first_peer = await self.node._get_peers_lookup(
                self.info_hash, self.timeout, self._deliver, self._merger)
            self.summary = self.node._summary(lookup, first_peer)
            if self._merger is not None:
                self.summary.scrape = self._merger.estimate()
        finally:
            self._queue.put_nowait(None)

    def _deliver(self, peers: list[Address]) -> None:
        for peer in peers:
            self._queue.put_nowait(peer)

    async def __anext__(self) -> Address:
        if self._task is None:
            self._task = self.node._spawn(self._run(), "mldht-get-peers")
        peer = await self._queue.get()
        if peer is None:
            await asyncio.wait([self._task])
            if self._task.cancelled():
                raise TransportClosed("the lookup was stopped (node closed)")
            failure = self._task.exception()
            if failure is not None:
                raise failure
            raise StopAsyncIteration
        return peer

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def collect(self) -> list[Address]:
        """Run the lookup to the end and return every peer found."""
        return [peer async for peer in self]
