"""Answers incoming KRPC queries (sans-I/O): a query in, a reply or an error out."""

from __future__ import annotations

import random as _random
from typing import Callable

from .compact import Address, NodeInfo, pack_address
from .ids import InfoHash, NodeId
from .krpc import (
    MAX_TRANSACTION_ID_LENGTH, METHOD_UNKNOWN, PROTOCOL_ERROR, WANT_IPV4, WANT_IPV6, AnnouncePeer, Error, FindNode, Get,
    GetPeers, Ping, Put, Query, Response, SampleInfohashes, UnknownQuery, encode_message,
)
from .bep33 import BloomFilter
from .bep44 import Item, ItemStore, StoreRejected
from .bep51 import Sampler
from .peerstore import PeerStore
from .routing import K, RoutingTable
from .tokens import TokenManager

MAX_REPLY_BYTES = 1400
"""Replies stay under this size so they fit one unfragmented datagram on common paths."""
MAX_PEERS_PER_REPLY = 100


class QueryHandler:
    """Builds the reply to each query from the routing table, the tokens and the peer store."""

    def __init__(self, own_id: NodeId, table: RoutingTable, tokens: TokenManager,
                 peers: PeerStore, rng: _random.Random, version: bytes | None = None,
                 items: ItemStore | None = None, k: int = K) -> None:
        self.own_id = own_id
        self.k = k
        """How many nodes a reply lists (NodeConfig.k)."""
        self.table = table
        self.tokens = tokens
        self.peers = peers
        self.rng = rng
        self.version = version
        self.items = items if items is not None else ItemStore()
        """BEP 44: the items served to `get` and stored by `put`."""
        self.sampler = Sampler(peers.info_hashes, rng)
        """BEP 51: the infohash sample served to `sample_infohashes`."""
        self.sibling_table: Callable[[], RoutingTable | None] | None = None
        """The other address family's routing table (a dual-stack node), for BEP 32 `want`."""

    def _response(self, query: Query, source: Address, **fields) -> Response:
        return Response(transaction_id=query.transaction_id, version=self.version,
                        sender_id=self.own_id, requester=source, **fields)

    def _error(self, query: Query, code: int, message: str) -> Error:
        return Error(transaction_id=query.transaction_id, version=self.version, code=code,
                     message=message)

    def _nodes_fields(self, target: bytes, want: tuple[bytes, ...], source: Address) -> dict:
        source_ipv6 = ":" in source[0]
        if not want or not ({WANT_IPV4, WANT_IPV6} & set(want)):
            want = (WANT_IPV6,) if source_ipv6 else (WANT_IPV4,)
        fields: dict[str, list[NodeInfo]] = {}
        for ipv6, key, wanted in ((False, "nodes", WANT_IPV4), (True, "nodes6", WANT_IPV6)):
            if wanted not in want:
                continue
            # Our own table serves the family the query came in on; BEP 32's `want` for the
            # other family is served from the sibling node's table, when there is one.
            table = self.table if ipv6 == source_ipv6 else (
                self.sibling_table() if self.sibling_table is not None else None)
            if table is None:
                continue
            # Only nodes that answered us: others may be unreachable (NAT) or spoofed sources.
            fields[key] = table.closest(target, count=self.k, verified_only=True,
                                        exclude=source)
        if not fields:  # only the family we lack was wanted: still answer with ours
            key = "nodes6" if source_ipv6 else "nodes"
            fields[key] = self.table.closest(target, count=self.k, verified_only=True,
                                             exclude=source)
        return fields

    def handle(self, query: Query, source: Address, now: float) -> Response | Error:
        """The reply to `query`, received from `source` at time `now`."""
        if isinstance(query, Ping):
            return self._response(query, source)
        if isinstance(query, FindNode):
            return self._response(query, source, **self._nodes_fields(query.target, query.want, source))
        if isinstance(query, GetPeers):
            return self._get_peers(query, query.info_hash, query.want, source, now)
        if isinstance(query, AnnouncePeer):
            return self._announce(query, source, now)
        if isinstance(query, SampleInfohashes):
            samples, num, interval = self.sampler.sample(now)
            reply = self._response(query, source, **self._nodes_fields(query.target, query.want,
                                                                      source))
            reply.extra = {b"samples": b"".join(samples), b"num": num, b"interval": interval}
            return reply
        if isinstance(query, Get):
            return self._get(query, source, now)
        if isinstance(query, Put):
            return self._put(query, source, now)
        if isinstance(query, UnknownQuery):
            if query.info_hash is not None:
                return self._get_peers(query, query.info_hash, (), source, now)
            if query.target is not None:
                return self._response(query, source, **self._nodes_fields(query.target, (), source))
            name = query.name.decode("ascii", "replace")
            return self._error(query, METHOD_UNKNOWN, f"Method Unknown: {name}")
        return self._error(query, METHOD_UNKNOWN, "Method Unknown")

    def quick_reply(self, message: dict, source: Address, now: float) -> bytes | None:
        """The encoded reply to a decoded query in its plain form, or None to use `handle`.

        Plain forms: ping with only `id`; find_node with only `id` and `target`; get_peers
        with only `id` and `info_hash`. They are nearly every query a node gets, and this
        builds their replies as bytes, without message objects: byte for byte what
        `encode_message(handle(decode_message(datagram)))` gives (a differential test holds
        both to that). Anything else, malformed queries included, gets None.
        """
        transaction_id = message.get(b"t")
        arguments = message.get(b"a")
        version = message.get(b"v")
        read_only = message.get(b"ro", 0)
        if (type(transaction_id) is not bytes or len(transaction_id) > MAX_TRANSACTION_ID_LENGTH
                or type(arguments) is not dict or (version is not None and type(version) is not bytes)
                or type(read_only) is not int or read_only not in (0, 1)):
            return None
        sender = arguments.get(b"id")
        if type(sender) is not bytes or len(sender) != 20:
            return None
        method = message.get(b"q")
        if method == b"ping":
            if len(arguments) != 1:
                return None
            target = None
        elif method == b"find_node" or method == b"get_peers":
            target = arguments.get(b"target" if method == b"find_node" else b"info_hash")
            if type(target) is not bytes or len(target) != 20 or len(arguments) != 2:
                return None
        else:
            return None
        return self.plain_reply(method, transaction_id, target, source, now)

    def plain_reply(self, method: bytes, transaction_id: bytes, target: bytes | None,
                    source: Address, now: float) -> bytes:
        """The encoded reply to a plain query whose form is already checked (the forms of
        `quick_reply`; `mldht._krpc.parse_plain_query` reads them in C): `method` is
        b"ping" (`target` None), b"find_node" or b"get_peers" (`target` 20 bytes)."""
        requester = pack_address(source)
        if target is None:
            return self._quick_encode(transaction_id, requester, b"")
        nodes = self.table.closest_compact(target, self.k, exclude=source,
                                           packed_exclude=requester)
        ipv6 = ":" in source[0]
        body = b"%s%d:%s" % (b"6:nodes6" if ipv6 else b"5:nodes", len(nodes), nodes)
        if method == b"get_peers":
            token = self.tokens.issue(source[0], target, now)
            body += b"5:token%d:%s" % (len(token), token)
            if target in self.peers:
                return self._quick_values(transaction_id, requester, body, target, ipv6, now)
        return self._quick_encode(transaction_id, requester, body)

    def _quick_encode(self, transaction_id: bytes, requester: bytes, body: bytes) -> bytes:
        return b"d2:ip%d:%s1:rd2:id20:%s%se1:t%d:%s%s1:y1:re" % (
            len(requester), requester, self.own_id, body, len(transaction_id), transaction_id,
            b"" if self.version is None else b"1:v%d:%s" % (len(self.version), self.version))

    def _quick_values(self, transaction_id: bytes, requester: bytes, body: bytes,
                      info_hash: bytes, ipv6: bool, now: float) -> bytes:
        without_values = self._quick_encode(transaction_id, requester, body)
        per_peer = len(b"18:") + 18 if ipv6 else len(b"6:") + 6
        room = MAX_REPLY_BYTES - len(without_values) - len(b"6:valuesle")
        values = self.peers.get_packed(info_hash, now, min(MAX_PEERS_PER_REPLY, room // per_peer),
                                       self.rng, ipv6)
        if not values:
            return without_values
        prefix = b"18:" if ipv6 else b"6:"  # every value is of the querier's family
        packed = prefix.join(values)
        return self._quick_encode(transaction_id, requester,
                                  b"%s6:valuesl%s%se" % (body, prefix, packed))

    def _get_peers(self, query: Query, info_hash: InfoHash, want: tuple[bytes, ...],
                   source: Address, now: float) -> Response:
        token = self.tokens.issue(source[0], info_hash, now)
        reply = self._response(query, source, token=token,
                               **self._nodes_fields(info_hash, want, source))
        if info_hash in self.peers:
            if getattr(query, "scrape", False):
                seeds, others = self.peers.swarm_ips(info_hash, now)
                reply.extra = {b"BFsd": bytes(BloomFilter.of(seeds)),
                               b"BFpe": bytes(BloomFilter.of(others))}
            ipv6 = ":" in source[0]
            per_peer = len(b"18:") + 18 if ipv6 else len(b"6:") + 6
            room = MAX_REPLY_BYTES - len(encode_message(reply)) - len(b"6:valuesle")
            limit = min(MAX_PEERS_PER_REPLY, room // per_peer)
            values = self.peers.get(info_hash, now, limit, self.rng, ipv6=ipv6,
                                    noseed=getattr(query, "noseed", False))
            if values:
                reply.values = values
        return reply

    def _announce(self, query: AnnouncePeer, source: Address, now: float) -> Response | Error:
        if not self.tokens.is_valid(query.token, source[0], query.info_hash, now):
            return self._error(query, PROTOCOL_ERROR, "bad token: not issued to this IP "
                               "for this infohash, or expired")
        port = source[1] if query.implied_port or query.port is None else query.port
        self.peers.announce(query.info_hash, (source[0], port), now, seed=query.seed)
        return self._response(query, source)

    def _get(self, query: Get, source: Address, now: float) -> Response:
        token = self.tokens.issue(source[0], query.target, now)
        nodes = self._nodes_fields(query.target, query.want, source)
        reply = self._response(query, source, token=token, **nodes)
        item = self.items.get(query.target, now)
        if item is None:
            return reply
        extra: dict = {}
        if item.is_mutable:
            extra[b"seq"] = item.seq
            if query.seq is None or item.seq > query.seq:
                extra.update({b"k": item.public_key, b"sig": item.signature, b"v": item.value})
        else:
            extra[b"v"] = item.value
        reply.extra = extra
        # A 1000-byte value and two families of nodes do not fit one datagram: the value
        # matters more, so nodes are given up (IPv6 first) until the reply fits.
        for key in ("nodes6", "nodes"):
            listed = getattr(reply, key)
            while listed and len(encode_message(reply)) > MAX_REPLY_BYTES:
                listed.pop()
        return reply

    def _put(self, query: Put, source: Address, now: float) -> Response | Error:
        item = Item(value=query.value, encoded=query.encoded_value, public_key=query.public_key,
                    salt=query.salt, seq=query.seq or 0, signature=query.signature)
        too_big = item.size_problem()  # first, as libtorrent does
        if too_big is not None:
            return self._error(query, *too_big)
        if not self.tokens.is_valid(query.token, source[0], item.target, now):
            return self._error(query, PROTOCOL_ERROR, "bad token: not issued to this IP "
                               "for this target, or expired")
        problem = item.problem()
        if problem is not None:
            return self._error(query, *problem)
        try:
            self.items.put(item, now, self.own_id, cas=query.cas if item.is_mutable else None)
        except StoreRejected as rejected:
            return self._error(query, rejected.code, rejected.message)
        return self._response(query, source)
