"""The sans-I/O DHT engine: everything between "datagram in" and "datagram out".

In the manner of aioquic's `QuicConnection`, it never touches a socket, a clock or an event
loop. Its driver (the asyncio `Node`, the simulator, a test) feeds it datagrams and the
time, sends what it returns, calls it back when its timer is due, and reads its events:

    engine = Engine(now, families=("ipv4",), config=NodeConfig())
    engine.set_address(("198.51.100.7", 6881))
    handle = engine.start_get_peers(info_hash, now)
    ...
    engine.receive_datagram(data, source, now)     # or receive_datagrams(batch, now)
    for data, address in engine.datagrams_to_send(now):
        sock.sendto(data, address)
    when = engine.get_timer()                      # call handle_timer(now) then
    while (event := engine.next_event()) is not None:
        ...                                        # PeersFound, OperationDone, ...

One engine serves one or both address families (BEP 32): each family has its own node id
(BEP 42 ties ids to addresses), routing table and external-IP vote; the peer and item
stores, the tokens, the limits and the outbound budget are shared, and every lookup runs on
each family and merges once.
"""

from __future__ import annotations

import math
import itertools
import logging
import random as _random
from collections import deque
from typing import Any, Iterable, Sequence

from .. import native
from ..bep42 import is_secure_id
from ..bep44 import Item, ItemStore, KeyPair, mutable_target
from ..blocklist import Blocklist
from ..compact import Address, NodeInfo, format_address, normalize_ip
from ..config import NodeConfig
from ..errors import InvalidInput, KrpcDecodeError, QueryNotSent, RemoteError
from ..ids import NodeId, distance
from ..krpc import (
    PROTOCOL_ERROR, Error, Message, Ping, Query, Response, SampleInfohashes, UnknownQuery,
    decode_datagram, encode_message, interpret_message, response_from_fields,
)
from ..peerstore import PeerStore
from ..routing import InsertOutcome, RoutingTable
from ..server import QueryHandler
from ..tokens import TokenManager
from .admission import Admission
from .budget import QueryBudget
from .estimate import SizeEstimate, SizeEstimator
from .events import (
    ErrorReceived, Event, ExternalIpChanged, NodeAdded, NodeIdChanged, NodeRemoved,
    QueryReceived, QueryTimedOut, ResponseReceived,
)
from .family import Family
from .identity import Identity
from .operations import (
    AnnounceOperation, ItemLookupSpec, LookupOperation, Operation, PutOperation,
    QueryOperation, ping_result, sample_result,
)
from .results import NodeStats
from .timers import Timers
from .transactions import Transaction, Transactions
from .traversal import FindNodeSpec, GetPeersSpec, TraversalSpec
from .upkeep import JoinOperation, KeepAlive, Upkeep, Verifier, announce_round, put_round

log = logging.getLogger("mldht.engine")

FAMILIES = ("ipv4", "ipv6")
MAX_METHODS_COUNTED = 64
MAX_VERSIONS_SHARED = 256
"""Bound on the query method names counted (unknown methods are many)."""
_QUICK_METHOD_NAMES = {b"ping": "ping", b"find_node": "find_node", b"get_peers": "get_peers"}
_QUICK_TARGET_KEYS = {b"find_node": b"target", b"get_peers": b"info_hash"}


class Engine:
    """A Mainline DHT node without I/O (see the module docstring).

    `families`: "ipv4", "ipv6" or both. `node_ids`: an explicit id per family (never
    changed; others are random and move to a BEP 42 id once the external IP is known).
    `rng` draws ids and transaction ids (default: the OS's); give a seeded one for
    simulations. `read_only` (BEP 43): queries carry `ro`=1 and nothing is answered.
    `native_parts` false keeps the quick path in Python even where the native codec is
    built and `MLDHT_NATIVE` allows it (mldht/native.py): the replies are the same bytes.
    """

    def __init__(self, now: float, *, families: Sequence[str] = ("ipv4",),
                 node_ids: dict[str, bytes] | None = None, config: NodeConfig | None = None,
                 rng: _random.Random | None = None, read_only: bool = False,
                 blocklist: Blocklist | None = None, peer_store: PeerStore | None = None,
                 item_store: ItemStore | None = None, native_parts: bool = True) -> None:
        names = list(dict.fromkeys(families))
        if not names or any(name not in FAMILIES for name in names):
            raise ValueError(f"families are 'ipv4' and/or 'ipv6', not {list(families)!r}")
        self.config = config = config or NodeConfig()
        self.rng = rng or _random.SystemRandom()
        self.read_only = read_only
        self.native_parts = native_parts
        krpc = native.module("_krpc") if native_parts else None
        self._parse_plain = krpc.parse_plain_query if krpc is not None and not read_only else None
        """The native codec's reader of plain queries (mldht/native.py), or None."""
        self._parse_reply = krpc.parse_reply if krpc is not None else None
        """The native codec's reader of plain replies, or None."""
        self.started = now
        self.now = now
        """The time of the last call that gave one (for events raised deep inside)."""
        self.stats = NodeStats()
        self._versions: dict[bytes, bytes] = {}
        self.timers = Timers()
        self.admission = Admission(config, blocklist, now)
        self.blocklist = blocklist
        self.peer_store = peer_store if peer_store is not None else PeerStore(
            config.max_infohashes, config.max_peers_per_infohash, config.peer_lifetime)
        self.item_store = item_store if item_store is not None else ItemStore(
            config.max_items, config.item_lifetime)
        self.tokens = TokenManager(now, self.rng, config.token_rotation)
        # Which peers and samples a reply lists is no secret, and a seeded PRNG picks 50
        # of a full swarm in 10 µs where SystemRandom's system calls take 43 µs. A seeded
        # `rng` (a simulation's) serves for both: a Mersenne Twister is 2.5 KB per engine.
        self._reply_rng = (_random.Random(self.rng.getrandbits(64))
                           if isinstance(self.rng, _random.SystemRandom) else self.rng)
        self.estimator = SizeEstimator(config.k)
        self.budget = QueryBudget(config.query_rate, config.query_burst,
                                  config.per_ip_query_rate, config.per_ip_query_burst, now)
        self._outgoing: list[tuple[bytes, Address]] = []
        self.transactions = Transactions(
            timers=self.timers, budget=self.budget, rng=self.rng, stats=self.stats,
            send=self._send, expired=self._expired, max_pending=config.max_pending,
            max_queued=config.max_queued_queries)
        node_ids = node_ids or {}
        self.families: list[Family] = []
        self._by_ipv6: dict[bool, Family] = {}
        for name in names:
            explicit = name in node_ids and node_ids[name] is not None
            node_id = NodeId(node_ids[name]) if explicit else NodeId.random(self.rng)
            table = self._new_table(node_id)
            handler = QueryHandler(node_id, table, self.tokens, self.peer_store,
                                   self._reply_rng, config.version, self.item_store, k=config.k)
            family = Family(name, Identity(node_id, explicit, config.external_ip_votes,
                                           config.adopt_secure_id), table, handler)
            self.families.append(family)
            self._by_ipv6[family.ipv6] = family
        if len(self.families) == 2:
            ipv4, ipv6 = self.families
            ipv4.handler.sibling_table = lambda: ipv6.table
            ipv6.handler.sibling_table = lambda: ipv4.table
        self.default_routers: set[Address] = set()
        """Router addresses (the default public routers): never put in the routing table."""
        self.router_answers: dict[Address, float] = {}
        self.verifier = Verifier(self)
        self.observing = False
        """Whether observation events are made (the driver turns it on for subscribers)."""
        self._results: list[Event] = []
        """Operation events (few at a time: a list is lighter than a deque)."""
        self._observations: deque[Event] | list = []
        """Observation events: a deque from the first one on (only while observing)."""
        self.max_observations = config.max_events
        self._operations: dict[int, Operation] = {}
        self._handles = itertools.count(1)
        self.upkeep = Upkeep(self, now)
        self.closed = False

    def _new_table(self, node_id: NodeId) -> RoutingTable:
        config = self.config
        table = RoutingTable(node_id, k=config.k, verify=is_secure_id,
                             enforce=config.enforce_node_id,
                             prefer_verified=config.prefer_verified_node_ids,
                             extended=config.extended_routing_table,
                             prefer_fast=config.prefer_fast_nodes,
                             fast_margin=config.fast_node_margin,
                             native_codec=self.native_parts)
        table.listener = self._table_changed
        return table

    # --- set-up by the driver -------------------------------------------------------------

    def family_of(self, ip: str) -> Family:
        """The family that serves `ip` (falls back to the only one there is)."""
        family = self._by_ipv6.get(":" in ip)
        return family if family is not None else self.families[0]

    def family(self, name: str) -> Family | None:
        return next((f for f in self.families if f.name == name), None)

    @property
    def node_id(self) -> NodeId:
        """The first family's node id."""
        return self.families[0].identity.node_id

    def set_address(self, address: Address) -> None:
        """Our bound address on its family (lookups never follow a referral to it)."""
        family = self._by_ipv6.get(":" in address[0])
        if family is None:
            raise ValueError(f"this engine has no family for {address[0]}")
        family.address = (normalize_ip(address[0]), address[1])

    def set_routers(self, addresses: Iterable[Address], default: bool = False) -> None:
        """Where to start lookups while a table holds fewer than k nodes; `default` routers
        (public routers, not storage nodes) never enter the routing table."""
        for family in self.families:
            family.routers = []
        for address in addresses:
            address = (normalize_ip(address[0]), address[1])
            if self.admission.is_blocked(address[0]):
                continue
            family = self._by_ipv6.get(":" in address[0])
            if family is not None and address not in family.routers:
                family.routers.append(address)
                if default:
                    self.default_routers.add(address)

    def drop_family(self, name: str) -> None:
        """Serve without family `name` (its socket could not be opened)."""
        family = self.family(name)
        if family is None or len(self.families) == 1:
            raise ValueError(f"cannot drop family {name!r}")
        self.families.remove(family)
        del self._by_ipv6[family.ipv6]
        for other in self.families:
            other.handler.sibling_table = None

    def add_saved_nodes(self, nodes: Iterable[NodeInfo]) -> None:
        """Nodes from a previous run: pinged at the next bootstrap, and where lookups start
        from (besides the routers) while the routing table holds fewer than k nodes."""
        limit = self.config.max_saved_nodes
        for node in nodes:
            family = self._by_ipv6.get(node.is_ipv6)
            if family is not None and len(family.saved_seeds) < limit:
                family.saved_nodes.append(node)
                family.saved_seeds.append(node)
                family.saved_addresses.add(node.address)

    def lookup_seeds(self, family: Family, target: bytes) -> tuple[list[NodeInfo], list[Address]]:
        """Where a lookup towards `target` starts: the routing table's closest nodes, and
        while it holds fewer than k, the saved nodes closest to the target (unverified:
        the lookup's queries check them) and the routers' addresses."""
        k = self.config.k
        seeds = family.table.closest(target, count=k * 4)
        if len(seeds) >= k:
            return seeds, []
        known = {node.address for node in seeds}
        saved = sorted((node for node in family.saved_seeds
                        if node.address not in known
                        and not family.saved_unanswered(node.address)),
                       key=lambda node: distance(node.id, target))
        return seeds + saved[:k * 4 - len(seeds)], family.routers

    def saved_state(self, family_name: str, now: float) -> tuple[NodeId, list[NodeInfo]]:
        """What to keep across runs for a family: its node id and good nodes: those of the
        routing table first, then the saved nodes of the last run not found silent in this
        one (a short run, a one-shot command's, adds what it learned to what it had)."""
        family = self.family(family_name)
        assert family is not None
        limit = self.config.max_saved_nodes
        nodes = family.table.closest(family.identity.node_id, limit, now=now,
                                     include_questionable=False)
        kept = {node.address for node in nodes}
        for node in family.saved_seeds:
            if len(nodes) >= limit:
                break
            if node.address not in kept and not family.saved_unanswered(node.address):
                kept.add(node.address)
                nodes.append(node)
        return family.identity.node_id, nodes

    # --- the I/O surface --------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """The datagrams to send now, in order, each once."""
        out = self._outgoing
        if out:
            self._outgoing = []
        return out

    def get_timer(self) -> float | None:
        """When `handle_timer` must be called next (None: no timer)."""
        return self.timers.next_time()

    def handle_timer(self, now: float) -> None:
        self.now = now
        self.timers.run_due(now)

    def next_event(self) -> Event | None:
        """The next event: operation events first, then observations; None when none."""
        if self._results:
            return self._results.pop(0)
        if self._observations:
            return self._observations.popleft()  # type: ignore[union-attr]
        return None

    @property
    def has_events(self) -> bool:
        return bool(self._results or self._observations)

    # The next five are for the engine's parts (`EngineParts`), not for drivers.

    def emit(self, event: Event) -> None:
        """Queue an operation's event for the driver (`next_event`)."""
        self._results.append(event)

    def observe(self, event: Event) -> None:
        """Queue an observation event (only made while `observing`); the oldest goes when
        `max_observations` are waiting."""
        observations = self._observations
        if type(observations) is list:
            observations = self._observations = deque()
        if len(observations) >= self.max_observations:
            self.stats.events_dropped += 1
            observations.popleft()
        observations.append(event)

    def _send(self, data: bytes, address: Address) -> None:
        self._outgoing.append((data, address))
        stats = self.stats
        stats.datagrams_sent += 1
        stats.bytes_sent += len(data)

    def _send_reply(self, data: bytes, address: Address, now: float) -> None:
        if self.admission.allow_reply(len(data), now):
            self._send(data, address)
        else:
            self.stats.replies_dropped += 1

    # --- receiving -------------------------------------------------------------------------

    def receive_datagrams(self, datagrams: Iterable[tuple[bytes, Any]], now: float) -> None:
        """Handle a batch of `(data, address)` datagrams that arrived by `now`."""
        receive = self.receive_datagram
        for data, address in datagrams:
            receive(data, address, now)

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        """Handle one datagram from `addr`; never raises for what is in `data`."""
        self.now = now
        stats = self.stats
        stats.datagrams_received += 1
        stats.bytes_received += len(data)
        try:
            source: Address = (normalize_ip(addr[0]), addr[1])
        except (ValueError, TypeError, IndexError):
            stats.malformed_received += 1
            return
        ip = source[0]
        admission = self.admission
        if admission.blocklist is not None and ip in admission.blocklist:
            stats.blocked += 1
            return
        limited = admission.limited
        # Cheap first: an IP we are not waiting on is charged before anything is decoded.
        charged = limited and ip not in self.transactions.waiting_on
        if charged and not admission.admit(ip, now):
            stats.rate_limited += 1
            return
        try:
            self._dispatch(data, source, now, limited and not charged)
        except Exception:  # nothing from the wire may break the receive path
            stats.receive_path_failures += 1
            log.exception("error handling a datagram from %s", source)

    def _over_limit(self, ip: str, now: float) -> bool:
        if self.admission.admit(ip, now):
            return False
        self.stats.rate_limited += 1
        return True

    def _dispatch(self, data: bytes, source: Address, now: float, charge: bool) -> None:
        """One datagram. `charge`: it came from an IP we are waiting on, so only a matched
        reply is free; anything else still counts against the IP's rate."""
        parse_plain = self._parse_plain
        if parse_plain is not None:
            # The native codec reads a plain query without decoding it into objects; it
            # answers None for everything else, which the Python path below then reads.
            plain = parse_plain(data)
            if plain is not None:
                method, transaction_id, sender, target, version, read_only = plain
                family = self._by_ipv6.get(":" in source[0]) or self.families[0]
                reply = family.handler.plain_reply(method, transaction_id, target, source, now)
                if not (charge and self._over_limit(source[0], now)):
                    self._answered_quickly(family, method, sender, target, version,
                                           read_only == 1, None, reply, source, now)
                return
        message: Message | None = None
        value = None  # the decoded datagram, for a query's own handler
        parse_reply = self._parse_reply
        if parse_reply is not None:
            fields = parse_reply(data)  # a plain reply, read in C; None for anything else
            if fields is not None:
                message = response_from_fields(fields)
        if message is None:
            decoded = self._decode(data, source, now, charge)
            if decoded is None:
                return
            message, value = decoded
        if isinstance(message, Query):
            if charge and self._over_limit(source[0], now):
                return
            self._on_query(message, value, source, now)
            return
        tx = self.transactions.match(message.transaction_id, source)
        if tx is None:
            if charge:
                self._over_limit(source[0], now)
            self.stats.unmatched_received += 1
            return
        if isinstance(message, Response):
            self._on_response(tx, message, source, now)
        else:
            stats = self.stats
            stats.errors_received += 1
            stats.errors_received_by_code[message.code] = \
                stats.errors_received_by_code.get(message.code, 0) + 1
            if self.observing:
                self.observe(ErrorReceived(now, tx.method, source, message.code, message.message))
            tx.owner.on_failure(tx, RemoteError(message.code, message.message), now)
        self._after_transaction(now)

    def _decode(self, data: bytes, source: Address, now: float,
                charge: bool) -> tuple[Message, Any] | None:
        """The message in a datagram, read in Python, and the decoded datagram; None when
        it was handled here (a plain query answered by the quick path, or a malformed
        datagram)."""
        try:
            value = decode_datagram(data)
            if type(value) is dict and value.get(b"y") == b"q" and not self.read_only:
                family = self._by_ipv6.get(":" in source[0]) or self.families[0]
                reply = family.handler.quick_reply(value, source, now)
                if reply is not None:  # a plain ping, find_node or get_peers: answered
                    if not (charge and self._over_limit(source[0], now)):
                        arguments = value[b"a"]
                        self._answered_quickly(
                            family, value[b"q"], arguments[b"id"],
                            arguments.get(b"target") or arguments.get(b"info_hash"),
                            value.get(b"v"), value.get(b"ro") == 1, arguments, reply, source,
                            now)
                    return None
            message = interpret_message(value, data)
        except KrpcDecodeError as exc:
            if charge and self._over_limit(source[0], now):
                return None
            self.stats.malformed_received += 1
            if exc.transaction_id is not None and exc.is_query and not self.read_only:
                self._count_error_sent(PROTOCOL_ERROR)
                self._send_reply(encode_message(Error(
                    transaction_id=exc.transaction_id, version=self.config.version,
                    code=PROTOCOL_ERROR, message=str(exc))), source, now)
            elif exc.transaction_id is not None:
                tx = self.transactions.match(exc.transaction_id, source)
                if tx is not None:
                    tx.owner.on_failure(tx, RemoteError(PROTOCOL_ERROR, f"malformed reply: {exc}"),
                                        now)
                    self._after_transaction(now)
            return None
        return message, value

    def _after_transaction(self, now: float) -> None:
        if self.transactions.queued:
            self.transactions.drain(now)

    def _on_response(self, tx: Transaction, message: Response, source: Address,
                     now: float) -> None:
        self.stats.responses_received += 1
        rtt = now - tx.sent_at if tx.sent_at is not None else None
        family = self._by_ipv6.get(":" in source[0]) or self.families[0]
        if source in family.routers:
            self.router_answers[source] = now
        if source in family.saved_addresses:
            family.saved_heard[source] = True
        if source not in self.default_routers:
            table = family.table
            known = table.by_ip(source[0])
            if known is None or known.id == message.sender_id or \
                    table.id_changed(source, message.sender_id, now):
                result = table.heard_from(NodeInfo(message.sender_id, *source), now,
                                          responded=True,
                                          version=self._shared_version(message.version),
                                          rtt=rtt)
                for questionable in result.ping:
                    self.verifier.ping(questionable, now)
        if message.requester is not None:
            self._vote_external_ip(family, source, message.requester[0], now)
        message.rtt = rtt if rtt is not None else 0.0
        if self.observing:
            self.observe(ResponseReceived(now, tx.method, source, message.sender_id,
                                           message.rtt, message.version))
        tx.owner.on_response(tx, message, now)

    def _count_query(self, method: str) -> None:
        counts = self.stats.queries_received
        if method in counts or len(counts) < MAX_METHODS_COUNTED:
            counts[method] = counts.get(method, 0) + 1

    def _count_error_sent(self, code: int) -> None:
        stats = self.stats
        stats.errors_sent += 1
        stats.errors_sent_by_code[code] = stats.errors_sent_by_code.get(code, 0) + 1

    def _answered_quickly(self, family: Family, method_name: bytes, sender: bytes,
                          target: bytes | None, version: bytes | None, read_only: bool,
                          arguments: dict | None, reply: bytes, source: Address,
                          now: float) -> None:
        """What `_on_query` does, for a query the quick path answered (`arguments`: its
        decoded `a`, None when the native codec read it)."""
        method = _QUICK_METHOD_NAMES[method_name]
        counts = self.stats.queries_received
        counts[method] = counts.get(method, 0) + 1
        self._send_reply(reply, source, now)
        if self.observing:
            if arguments is None:
                arguments = {b"id": sender}
                if target is not None:
                    arguments[_QUICK_TARGET_KEYS[method_name]] = target
            self.observe(QueryReceived(now, method, source, sender, target, read_only,
                                        version, arguments))
        if not read_only:
            self._note_querier(family, NodeId(sender), source, now, version)

    def _on_query(self, query: Query, raw: dict, source: Address, now: float) -> None:
        method = (query.name if isinstance(query, UnknownQuery) else query.method).decode(
            "ascii", "replace")
        self._count_query(method)
        if self.observing:
            arguments = raw.get(b"a") if isinstance(raw.get(b"a"), dict) else {}
            target = arguments.get(b"target") or arguments.get(b"info_hash")
            self.observe(QueryReceived(now, method, source, query.sender_id,
                                        target if isinstance(target, bytes) else None,
                                        query.read_only, query.version, arguments))
        if self.read_only:
            return  # BEP 43: read-only nodes do not answer
        family = self._by_ipv6.get(":" in source[0]) or self.families[0]
        reply = family.handler.handle(query, source, now)
        if isinstance(reply, Error):
            self._count_error_sent(reply.code)
        self._send_reply(encode_message(reply), source, now)
        if not query.read_only:
            self._note_querier(family, query.sender_id, source, now, query.version)

    def _shared_version(self, version) -> bytes | None:
        """One bytes object per distinct `v`, so that routing entries share it; bounded,
        since a `v` is whatever a remote node chose to send."""
        if not isinstance(version, bytes):
            return None
        shared = self._versions.get(version)
        if shared is None:
            if len(self._versions) >= MAX_VERSIONS_SHARED or len(version) > 16:
                return version
            shared = self._versions[version] = version
        return shared

    def _note_querier(self, family: Family, sender_id: NodeId, source: Address,
                      now: float, version: bytes | None = None) -> None:
        """A (not read-only) node queried us: the table hears of it, and one that has never
        answered us is pinged (as libtorrent does) so that it can become a routing entry."""
        querier = NodeInfo(sender_id, source[0], source[1])
        # Not the response path: a querier never makes the table ask for pings of its nodes.
        result = family.table.heard_from(querier, now, responded=False,
                                         version=self._shared_version(version))
        verifier = self.verifier
        if (not result.verified and result.outcome is not InsertOutcome.REJECTED
                and not verifier.busy and source not in verifier.verifying
                and verifier.may_verify_querier(source[0], now)):
            verifier.ping(querier, now)

    def _expired(self, tx: Transaction, now: float) -> None:
        family = self._by_ipv6.get(":" in tx.address[0])
        if family is not None:
            family.table.on_timeout(tx.address, now)
        if self.observing:
            self.observe(QueryTimedOut(now, tx.method, tx.address))

    def _table_changed(self, change: str, entry) -> None:
        if self.observing:
            event = NodeAdded if change == "added" else NodeRemoved
            self.observe(event(self.now, entry.info))

    # --- identity ----------------------------------------------------------------------------

    def _vote_external_ip(self, family: Family, voter: Address, reported_ip: str,
                          now: float) -> None:
        identity = family.identity
        changed = identity.vote(voter[0], reported_ip)
        if changed is None:
            return
        if self.observing:
            self.observe(ExternalIpChanged(now, changed, identity.voters_for(changed)))
        new_id = identity.new_id_for(changed, self.rng)
        if new_id is not None:
            self.change_id(family, new_id, now, reason=f"BEP 42 id for {changed}")

    def change_id(self, family: Family, new_id: NodeId, now: float, reason: str = "") -> None:
        """Move `family` to `new_id`, keeping every known node, then look the new id up."""
        old = family.identity.node_id
        family.identity.node_id = new_id
        family.table = family.table.with_own_id(new_id)
        family.table.listener = self._table_changed
        family.handler.own_id = new_id
        family.handler.table = family.table
        self.stats.id_changes += 1
        if self.observing:
            self.observe(NodeIdChanged(now, old, new_id, reason))
        if not self.closed:
            self.start_internal_lookup(FindNodeSpec(new_id), family, now,
                                       timeout=self.config.bootstrap_timeout)

    def external_ip(self, family_name: str | None = None) -> str | None:
        """Our IP as other nodes see it on a family (default: the first), once enough of them
        agree (BEP 42); else None."""
        family = self.family(family_name) if family_name else self.families[0]
        return family.identity.external_ip if family is not None else None

    # --- operations ----------------------------------------------------------------------------

    def acceptable(self, node_id: bytes, ip: str) -> bool:
        """Never a blocklisted node; with BEP 42 enforcement, only ids that match their IP."""
        if self.admission.is_blocked(ip):
            return False
        return not self.config.enforce_node_id or is_secure_id(node_id, ip)

    def submit(self, tx: Transaction, now: float) -> None:
        """Send a query for an operation (through the outbound budget)."""
        query = tx.query
        query.read_only = self.read_only
        query.version = self.config.version
        if self.closed:
            tx.owner.on_failure(tx, QueryNotSent("the node is closed"), now)
            return
        if self.admission.is_blocked(tx.address[0]):
            tx.owner.on_failure(tx, QueryNotSent(f"{tx.address[0]} is blocklisted: not queried"),
                                now)
            return
        family = self._by_ipv6.get(":" in tx.address[0])
        if family is None:
            tx.owner.on_failure(tx, QueryNotSent(
                f"no {'IPv6' if ':' in tx.address[0] else 'IPv4'} socket to reach "
                f"{tx.address[0]}"), now)
            return
        if tx.address in family.saved_addresses:
            family.saved_heard.setdefault(tx.address, False)
        self.transactions.submit(tx, now)

    def cancel_transaction(self, tx: Transaction, now: float) -> None:
        self.transactions.cancel(tx, now)

    def next_handle(self) -> int:
        """A new operation handle."""
        return next(self._handles)

    def register(self, operation: Operation) -> None:
        """Count `operation` among those in flight (`operations`, `cancel`, `close`)."""
        self._operations[operation.handle] = operation

    def forget(self, operation: Operation) -> None:
        """`operation` has ended: no longer in flight."""
        self._operations.pop(operation.handle, None)

    def _start(self, operation: Operation, now: float) -> int:
        self.now = now
        self.register(operation)
        operation.start(now)
        return operation.handle

    def cancel(self, handle: int, now: float) -> None:
        """Stop an operation; no event will come for it."""
        operation = self._operations.get(handle)
        if operation is not None:
            operation.cancel(now)

    def operations(self) -> list[Operation]:
        """Operations in flight, oldest first."""
        return list(self._operations.values())

    def start_query(self, address: Address, query: Query, now: float,
                    timeout: float | None = None) -> int:
        """Send any query; the result is its `Response` (`RemoteError` for a KRPC error)."""
        address = (normalize_ip(address[0]), address[1])
        return self._start(QueryOperation(self, self.next_handle(), now, address, query,
                                          self.config.query_timeout if timeout is None
                                          else timeout), now)

    def start_ping(self, address: Address, now: float, timeout: float | None = None) -> int:
        """Ping a node; the result is its `NodeId`."""
        address = (normalize_ip(address[0]), address[1])
        family = self.family_of(address[0])
        return self._start(QueryOperation(
            self, self.next_handle(), now, address,
            Ping(transaction_id=b"", sender_id=family.identity.node_id),
            self.config.query_timeout if timeout is None else timeout, convert=ping_result), now)

    def start_sample_infohashes(self, address: Address, now: float,
                                target: bytes | None = None, timeout: float | None = None) -> int:
        """BEP 51; the result is a `Sample` (`InvalidSample` when the reply is not one)."""
        address = (normalize_ip(address[0]), address[1])
        family = self.family_of(address[0])
        query = SampleInfohashes(transaction_id=b"", sender_id=family.identity.node_id,
                                 target=NodeId(target) if target is not None
                                 else NodeId.random(self.rng))
        return self._start(QueryOperation(
            self, self.next_handle(), now, address, query,
            self.config.query_timeout if timeout is None else timeout,
            convert=sample_result), now)

    def start_traversal(self, spec: TraversalSpec, now: float, timeout: float = 30.0) -> int:
        """Run a traversal of any kind (an application's own `TraversalSpec` included) on
        every family; the result is `spec.result(summary)`."""
        return self._start(LookupOperation(self, self.next_handle(), now, spec, timeout), now)

    def start_find_node(self, target: bytes, now: float, timeout: float = 30.0) -> int:
        """Iterative find_node; the result is the `LookupSummary` (its `closest`)."""
        return self.start_traversal(FindNodeSpec(target), now, timeout)

    def start_get_peers(self, info_hash: bytes, now: float, timeout: float = 30.0,
                        scrape: bool = False) -> int:
        """get_peers; `PeersFound` events as peers come, then the `LookupSummary`."""
        return self.start_traversal(GetPeersSpec(info_hash, scrape), now, timeout)

    def start_announce(self, info_hash: bytes, now: float, port: int | None = None, *,
                       implied_port: bool = False, seed: bool = False,
                       timeout: float = 30.0) -> int:
        """get_peers, then announce_peer to the k closest nodes that gave a token; the
        result is an `AnnounceResult`."""
        if port is None and not implied_port:
            raise InvalidInput("give a port, or implied_port=True")
        return self._start(AnnounceOperation(self, self.next_handle(), now, info_hash, port,
                                             implied_port, seed, timeout), now)

    def start_get_item(self, target: bytes, now: float, salt: bytes = b"",
                       timeout: float = 30.0) -> int:
        """BEP 44 get; the result is an `ItemResult` (every copy verified)."""
        return self.start_traversal(ItemLookupSpec(target, salt), now, timeout)

    def start_put(self, target: bytes, now: float, make, *, salt: bytes = b"",
                  cas: int | None = None, timeout: float = 30.0) -> int:
        """BEP 44 put: a get traversal, then `make(item found or None)` is put on the k
        closest nodes; the result is a `PutResult`."""
        return self._start(PutOperation(self, self.next_handle(), now, target, salt, make, cas,
                                        timeout), now)

    def start_put_immutable(self, value, now: float, timeout: float = 30.0) -> int:
        item = Item.immutable(value)
        return self.start_put(item.target, now, lambda current: item, timeout=timeout)

    def start_put_mutable(self, keys: KeyPair, value, now: float, *, salt: bytes = b"",
                          seq: int | None = None, cas: int | None = None,
                          timeout: float = 30.0) -> int:
        """Without `seq`: the highest seq found plus one (1 for a new item)."""
        def make(current: Item | None) -> Item:
            next_seq = seq if seq is not None else (current.seq + 1 if current else 1)
            return Item.mutable(keys, value, next_seq, salt)
        return self.start_put(mutable_target(keys.public_key, salt), now, make, salt=salt,
                              cas=cas, timeout=timeout)

    def start_bootstrap(self, now: float, timeout: float | None = None) -> int:
        """Join: ping saved nodes, look up our own id from the routers (again while the table
        stays under k), refresh sparse buckets; the result is a `JoinResult`."""
        return self._start(JoinOperation(self, self.next_handle(), now,
                                         self.config.bootstrap_timeout if timeout is None
                                         else timeout), now)

    def start_keep_announced(self, info_hash: bytes, now: float, port: int | None = None, *,
                             implied_port: bool = False, seed: bool = False,
                             interval: float | None = None, timeout: float = 30.0) -> int:
        """Announce now and again every `interval` (default `NodeConfig.reannounce_interval`,
        with jitter), before the peers expire, until cancelled; each round's
        `AnnounceResult` comes as a `Renewed` event."""
        if port is None and not implied_port:
            raise InvalidInput("give a port, or implied_port=True")
        config = self.config
        return self._start(KeepAlive(
            self, self.next_handle(), now, "keep_announced",
            announce_round(self, info_hash, port, implied_port, seed, timeout),
            config.reannounce_interval if interval is None else interval,
            config.republish_jitter, _random.Random(self.rng.getrandbits(64))), now)

    def start_keep_item(self, item: Item, now: float, interval: float | None = None,
                        timeout: float = 30.0) -> int:
        """Put `item` now and again every `interval` (default
        `NodeConfig.item_republish_interval`, with jitter), well within the 2 hours nodes
        keep it, until cancelled; each round's `PutResult` comes as a `Renewed` event."""
        problem = item.problem()
        if problem is not None:
            raise InvalidInput(f"cannot put this item: {problem[1]}")
        config = self.config
        return self._start(KeepAlive(
            self, self.next_handle(), now, "keep_item", put_round(self, item, timeout),
            config.item_republish_interval if interval is None else interval,
            config.republish_jitter, _random.Random(self.rng.getrandbits(64))), now)

    def start_internal_lookup(self, spec: TraversalSpec, family: Family, now: float,
                              timeout: float = 30.0) -> Operation:
        """A lookup the engine runs for itself (refresh, rejoin, after an id change)."""
        operation = LookupOperation(self, self.next_handle(), now, spec, timeout,
                                    families=[family], parent=lambda *args: None)
        self._start(operation, now)
        return operation

    def close(self, now: float) -> None:
        """Stop everything: operations end with `QueryNotSent` failures where they have
        queries out; no timer remains."""
        if self.closed:
            return
        self.closed = True
        self.upkeep.stop()
        for operation in list(self._operations.values()):
            operation.fail(QueryNotSent("the node closed"), now)
        self.transactions.close(now)
        self.timers = Timers()
        self.transactions.timers = self.timers

    # --- what the engine knows ------------------------------------------------------------

    def estimated_size(self, now: float | None = None) -> SizeEstimate:
        """The DHT's size from the distances of the closest nodes of the lookups of the last
        hour (of all kept, without `now`)."""
        return self.estimator.estimate(now)

    def believed_shared_bits(self) -> int | None:
        """How close to its target a lookup believes an id can be (leading bits shared):
        `NodeConfig.max_believed_shared_bits`, raised to 10 bits past the size estimate's
        when that says the DHT is bigger (at most 64); None when the check is off."""
        bits = self.config.max_believed_shared_bits
        if bits <= 0:
            return None
        size = self.estimator.estimate(self.now).size
        if size > 1:
            bits = max(bits, min(64, math.ceil(math.log2(size)) + 10))
        return bits

    def table(self, now: float) -> dict[str, dict]:
        """Every routing table entry, per family and bucket (see `status.table_entries`)."""
        from .status import table_entries
        return {family.name: table_entries(family, now) for family in self.families}

    def stored_peers(self, info_hash: bytes, now: float) -> list[dict]:
        """The live peers this node stores for `info_hash` (announced to it), oldest
        announce first: address, seconds since the announce, seed (BEP 33)."""
        return [{"address": format_address(peer), "announced_ago": round(now - stored.announced, 1),
                 "seed": stored.seed}
                for peer, stored in self.peer_store.stored(info_hash, now)]

    def status(self, now: float) -> dict:
        """A JSON-ready snapshot of the whole node (see `status.build_status`)."""
        from .status import build_status
        return build_status(self, now)
