"""One sweep of the keyspace: every reachable node visited once (the8472's keyspace
traversal), on a running `mldht.Node` and through its public API only.

Each node is asked once, for a target next to its own id (its id with the last bit
flipped), so that its reply lists its closest neighbours: walking the keyspace in order from
what the crawler's own routing table holds, every node that some other node lists is found,
and none is asked twice. `sample_infohashes` (BEP 51) is the query where the node supports
it (its reply has the same `nodes`, plus samples), `find_node` where it refused it, or where
the `interval` it gave last time has not passed. A node that does not answer is asked once
more (datagrams get lost); one that answers with an error is not.

Politeness comes from the node's outbound budget (`NodeConfig.query_rate` in all,
`per_ip_query_rate` after `per_ip_query_burst` to any one IP) and from here: one query at a
time to an IP, one node per IP per sweep (another id or port on an IP already known is an
alias, counted, not visited), and nothing that the8472's sanitizing rules reject: no
unspecified, multicast, reserved or link-local address, loopback only from loopback, and a
private address only from a node on a private address itself.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

from mldht.bep42 import is_secure_id
from mldht.bep51 import InvalidSample, Sample
from mldht.clients import describe_version
from mldht.compact import NodeInfo, format_address, is_contactable
from mldht.errors import MldhtError, QueryNotSent, QueryTimeout, RemoteError
from mldht.ids import NodeId
from mldht.krpc import FindNode, SampleInfohashes

METHOD_UNKNOWN = 204


@dataclass(order=True)
class Contact:
    key: int
    ip: str = field(compare=False)
    port: int = field(compare=False)
    node_id: bytes = field(compare=False)
    referrer: str | None = field(compare=False, default=None)
    found_at: float = field(compare=False, default=0.0)

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.ip else "ipv4"

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)


def neighbour_target(node_id: bytes) -> NodeId:
    """The id next to `node_id`: a reply for it lists the node's closest neighbours."""
    return NodeId(node_id[:-1] + bytes([node_id[-1] ^ 1]))


def _is_private(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return True
    return not address.is_global and not address.is_loopback


def acceptable(address: tuple[str, int], referrer: tuple[str, int] | None) -> bool:
    """the8472's sanitizing: may a node that `referrer` listed be visited?"""
    if referrer is None:
        return True  # our own routing table: its nodes answered us
    if not is_contactable(address, referrer):
        return False
    return not _is_private(address[0]) or _is_private(referrer[0])


@dataclass
class SweepStats:
    found: dict = field(default_factory=lambda: {"ipv4": 0, "ipv6": 0})
    visited: int = 0
    answered: dict = field(default_factory=lambda: {"ipv4": 0, "ipv6": 0})
    timeouts: int = 0
    errors: int = 0
    queries: int = 0
    aliases: int = 0
    rejected: int = 0
    samples: int = 0
    bep51: int = 0
    started: float = field(default_factory=time.monotonic)


class Sweep:
    """Visit every node reachable from `seeds`, each once; `on_visit(row)` gets the visit
    record (see store.VISIT_COLUMNS), `on_contact(contact)` each new node,
    `on_alias(...)` each second id on a known IP."""

    def __init__(self, node, sweep: int, *, concurrency: int = 64, timeout: float = 5.0,
                 retries: int = 1, sample: bool = True,
                 sample_after: dict[str, float] | None = None,
                 want: tuple[bytes, ...] = (), clock: Callable[[], float] = time.time,
                 on_visit=None, on_contact=None, on_alias=None, on_samples=None,
                 on_edges=None, partition: Callable[[bytes], bool] | None = None) -> None:
        self.node = node
        self.sweep = sweep
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.sample = sample
        self.sample_after = sample_after if sample_after is not None else {}
        self.want = want
        self.clock = clock
        self.on_visit = on_visit or (lambda row: None)
        self.on_contact = on_contact or (lambda contact: None)
        self.on_alias = on_alias or (lambda *args: None)
        self.on_samples = on_samples or (lambda *args: None)
        self.on_edges = on_edges
        self.partition = partition
        self.stats = SweepStats()
        self.known: dict[str, Contact] = {}
        """Every IP learned of this sweep, with the first node seen on it."""
        self.visited: set[str] = set()
        self.frontier: list[Contact] = []
        self.in_flight: set[str] = set()
        self.listed_by_half: tuple[set[str], set[str]] = (set(), set())
        """The IPs listed by one half of the referrers and by the other (split by a hash of
        the referrer's IP): two captures of one sweep, for mark-recapture."""
        self.answered_ips: set[str] = set()
        self.position = 0
        """The id (as an integer) of the last node taken from the frontier: how far the walk
        has come through the keyspace."""
        self._wake = asyncio.Event()

    # --- the frontier -----------------------------------------------------------------------

    def learn(self, info: NodeInfo, referrer: tuple[str, int] | None) -> None:
        ip, port = info.ip, info.port
        if not acceptable((ip, port), referrer):
            self.stats.rejected += 1
            return
        node_id = bytes(info.id)
        if self.partition is not None and not self.partition(node_id):
            return
        if referrer is not None:
            self.listed_by_half[zlib.crc32(referrer[0].encode()) & 1].add(ip)
        referrer_text = format_address(referrer) if referrer else None
        known = self.known.get(ip)
        if known is not None:
            if known.node_id != node_id or known.port != port:
                self.stats.aliases += 1
                self.on_alias(ip, port, node_id, referrer_text)
            return
        contact = Contact(int.from_bytes(node_id, "big"), ip, port, node_id, referrer_text,
                          self.clock())
        self.add(contact, new=True)

    def add(self, contact: Contact, new: bool) -> None:
        self.known[contact.ip] = contact
        self.stats.found[contact.family] += 1
        if new:
            self.on_contact(contact)
        if contact.ip not in self.visited:
            heapq.heappush(self.frontier, contact)
            self._wake.set()

    def restore(self, contacts: list[tuple], visited: set[str]) -> None:
        """Carry on a sweep a crashed crawl left (`store.frontier`): visited IPs are not
        visited again."""
        self.visited |= visited
        for ip in visited:
            self.known.setdefault(ip, Contact(0, ip, 0, b"", None, 0.0))
        for ip, port, _family, node_id, found_at, referrer in contacts:
            self.add(Contact(int.from_bytes(node_id, "big"), ip, port, bytes(node_id),
                             referrer, found_at), new=False)

    def _next(self) -> Contact | None:
        while self.frontier:
            contact = heapq.heappop(self.frontier)
            if contact.ip in self.visited or contact.ip in self.in_flight:
                continue
            self.position = contact.key
            return contact
        return None

    @property
    def covered(self) -> float:
        """Share of the keyspace the walk has passed (for the estimate of the total)."""
        return self.position / float(1 << 160)

    # --- visiting -------------------------------------------------------------------------

    async def run(self) -> SweepStats:
        """Until nothing is left to visit."""
        running: set[asyncio.Task] = set()
        try:
            while True:
                while len(running) < self.concurrency:
                    contact = self._next()
                    if contact is None:
                        break
                    self.in_flight.add(contact.ip)
                    task = asyncio.ensure_future(self._visit(contact))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    task.add_done_callback(lambda _: self._wake.set())
                if not running and not self.frontier:
                    return self.stats
                self._wake.clear()
                await self._wake.wait()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _query(self, contact: Contact, sampling: bool):
        target = neighbour_target(contact.node_id) if contact.node_id else NodeId.random()
        own = self.node.node_ids.get(contact.family) or self.node.node_id
        if sampling:
            return SampleInfohashes(transaction_id=b"", sender_id=own, target=target,
                                    want=self.want)
        return FindNode(transaction_id=b"", sender_id=own, target=target, want=self.want)

    async def _visit(self, contact: Contact) -> None:
        stats = self.stats
        now = self.clock()
        sampling = self.sample and self.sample_after.get(contact.ip, 0.0) <= now
        row = {"sweep": self.sweep, "ip": contact.ip, "port": contact.port,
               "family": contact.family, "node_id": contact.node_id or None,
               "referrer": contact.referrer, "queries": 0, "outcome": "timeout"}
        response = None
        attempts = 0
        try:
            while True:
                attempts += 1
                row["queries"] += 1
                stats.queries += 1
                try:
                    response = await self.node.query(contact.address,
                                                     self._query(contact, sampling),
                                                     timeout=self.timeout)
                    break
                except QueryTimeout:
                    if attempts > self.retries:
                        break
                except RemoteError as error:
                    if sampling and error.code == METHOD_UNKNOWN:
                        row["bep51"] = 0
                        sampling = False  # no BEP 51: the neighbours by find_node
                        continue
                    row["outcome"], row["error_code"] = "error", error.code
                    break
                except QueryNotSent:
                    row["outcome"] = "not_sent"
                    break
        finally:
            self.in_flight.discard(contact.ip)
            self.visited.add(contact.ip)
        stats.visited += 1
        row["at"] = self.clock()
        if response is not None:
            self._answered(contact, response, sampling, row)
        elif row["outcome"] == "error":
            stats.errors += 1
        else:
            stats.timeouts += 1
        self.on_visit(row)

    def _answered(self, contact: Contact, response, sampling: bool, row: dict) -> None:
        stats = self.stats
        stats.answered[contact.family] += 1
        self.answered_ips.add(contact.ip)
        version = response.version
        client = describe_version(version)
        row.update(outcome="answered", answered_id=bytes(response.sender_id),
                   v=version, client=client.name or client.code if client else None,
                   client_version=client.version if client else None,
                   bep42=int(is_secure_id(bytes(response.sender_id), contact.ip)),
                   rtt=None if response.rtt is None else round(response.rtt, 4))
        nodes = list(response.nodes or []) + list(response.nodes6 or [])
        row["neighbours"] = len(nodes)
        if sampling:
            try:
                sample = Sample.from_response(response)
            except InvalidSample:
                row["bep51"] = 0
            else:
                stats.bep51 += 1
                stats.samples += len(sample.samples)
                row.update(bep51=1, num=sample.num, interval=sample.interval,
                           samples=len(sample.samples))
                self.sample_after[contact.ip] = row["at"] + sample.interval
                if sample.samples:
                    self.on_samples(contact.ip, row["at"], [bytes(h) for h in sample.samples])
        referrer = contact.address
        for info in nodes:
            self.learn(info, referrer)
        if self.on_edges is not None:
            self.on_edges(contact.ip, nodes)


def seed_contacts(node) -> list[NodeInfo]:
    """The crawler node's own routing table (nodes that answered it), as where to start."""
    seeds = []
    for family in node.table().values():
        for bucket in family["buckets"]:
            for entry in bucket["nodes"]:
                host, _, port = entry["address"].rpartition(":")
                seeds.append(NodeInfo(NodeId(bytes.fromhex(entry["id"])), host.strip("[]"),
                                      int(port)))
    return seeds


__all__ = ["Contact", "Sweep", "SweepStats", "acceptable", "neighbour_target", "seed_contacts",
           "MldhtError"]
