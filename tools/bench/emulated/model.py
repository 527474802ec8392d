"""The emulated DHT's network: who the virtual nodes are and what each one answers.

Sans-I/O: `EmulatedNetwork.answer(datagram, source, destination, now)` returns the reply
(or None) for one datagram; the UDP loop (`server.py`) adds the round-trip time, the loss
and the per-IP limit. Everything here is deterministic from the seed.

**The population.** `nodes` virtual nodes are online at any moment (on average); with churn
the population is `nodes / availability`, each node alternating online sessions and
offline gaps on a schedule of its own. Node ids are 20 random bytes (or a BEP 42 id for the
node's IP, in the share its client produces), kept sorted in one buffer; everything else
about a node (its address, client, round-trip time, schedule) lives in flat arrays indexed
by its rank in id order: about 60 bytes a node.

**Addresses** come from a node's slot (a random permutation of the ranks), so that address
and id are unrelated: the Sybil clusters first (a few IPs with thousands of ports each),
then the nodes behind a shared IP (carrier-grade NAT: groups of 2 to `nat_group_max` on one
IP, one port each), then one node per IP, from 127.1.0.0 up (127.0.0.0/16 is left to the
crawler and the tools); past the 16.7 million IPs of 127/8 the singles take a second port.

**Routing tables**, computed on demand, as a real node's would be (k = 8): bucket b of node
i holds nodes whose ids share exactly b leading bits with its own: all of them where there
are at most 8 (near its own id the table is full), else 8 picked pseudo-randomly from the
subtree (far from it, a sparse view: 8 of millions). An entry whose node went offline stays
listed for `stale_minutes` after it left (a real node evicts an entry only after it failed
to answer several times), then the bucket takes the next node of its subtree instead. A
reply lists the 8 entries of the table closest to the target by XOR, as BEP 5 asks.
The bootstrap node is a router: its table holds only nodes that answer (a router hands out
nodes it has verified); else one unlucky bucket of silent contacts failed every cold lookup
towards half of the keyspace.
Ordering and prefixes use the ids' first 64 bits: two of 25 million random ids share them
with probability 10^-5, and the build draws again when they do.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from dataclasses import dataclass, field, fields

import numpy as np

from mldht.krpc import decode_bencode

IP_BASE = (127 << 24) | (1 << 16)
"""127.1.0.0: the first virtual node's IP (127.0.0.0/16 is left to the crawler)."""
IP_LIMIT = (127 << 24) | 0xFFFFFF
"""127.255.255.255 itself is never used."""
K = 8
MASK64 = (1 << 64) - 1
TOKEN_LENGTH = 4
MAX_SAMPLES = 20

ERROR_GENERIC, ERROR_SERVER, ERROR_PROTOCOL, ERROR_METHOD = 201, 202, 203, 204


@dataclass(frozen=True)
class Client:
    """A client implementation as the DHT sees it: the `v` it sends, what it does with
    `sample_infohashes` (BEP 51) and other unknown methods: `answer` (BEP 51),
    `nodes` (takes any query with a target for find_node: libtorrent before 1.2, the8472's
    mldht), `refuse` (error 204, anacrolix) or `drop` (no reply: Transmission's jech/dht,
    aria2, WebTorrent; µTorrent assumed), and the share of its ids that are BEP 42 ids."""

    code: str
    v: bytes | None
    share: float
    bep51: str
    bep42: float


# The client mix and what each does (the README's emulated-DHT table has the sources:
# libtorrent, the8472/mldht, anacrolix, jech/dht, aria2 and bittorrent-dht's code; the shares
# are an estimate: µTorrent held 60 % of nodes in 2011, libtorrent has grown since).
CLIENTS: tuple[Client, ...] = (
    Client("libtorrent", b"LT\x02\x00", 0.30, "answer", 0.95),
    Client("libtorrent-1.1", b"LT\x01\x10", 0.10, "nodes", 0.95),
    Client("utorrent", b"UT\x89\x01", 0.40, "drop", 0.95),
    Client("no-v", None, 0.12, "drop", 0.0),
    Client("mldht-java", b"ml\x00\x03", 0.02, "answer", 0.9),
    Client("aria2", b"A2\x00\x03", 0.01, "drop", 0.0),
    Client("other", b"AN\x00\x01", 0.05, "refuse", 0.0),
)


@dataclass
class EmulationConfig:
    """What the emulated DHT looks like. The defaults are the real DHT's as far as it has
    been measured (the README's "emulated DHT" table gives each figure's source);
    `plain()` turns the hostile parts off."""

    nodes: int = 100_000
    """Virtual nodes online at any moment (on average, with churn)."""
    seed: int = 1
    silent: float = 0.40
    """Share of online nodes that never answer a stranger (behind NAT or a firewall: 42 %
    of nodes in Jimenez et al., P2P 2009), listed by others as often as anyone."""
    gone: float = 0.10
    """Share of listed contacts that left for good and still sit in others' tables:
    with `silent`, about half of the contacts handed out never answer (the8472's
    sanitizing notes: "50% non-reachable contacts")."""
    loss: float = 0.01
    """Each datagram, either way, is lost with this probability."""
    rtt_median: float = 0.100
    """Seconds; each node's round trip is drawn log-normally around it..."""
    rtt_sigma: float = 0.8
    """...with this spread (p90 about 2.8 times the median, p99 about 6.4 times)..."""
    rtt_tail: float = 0.02
    """...and this share of nodes 1 to 5 s away (congested uplinks)."""
    jitter_sigma: float = 0.15
    """Per-datagram variation around a node's own round trip (log-normal)."""
    nat_share: float = 0.05
    """Share of nodes on an IP that other nodes use too (CGNAT, several clients on one
    host), on different ports and with different ids; 2 to `nat_group_max` per IP."""
    nat_group_max: int = 8
    sybil_share: float = 0.01
    """Share of nodes that are Sybils, `sybil_ids` ids on one IP (one port each): about
    300,000 Sybils of 15 to 27 million nodes (Wang and Kangasharju, GLOBECOM 2012). They
    answer ping and find_node, never get_peers or sample_infohashes."""
    sybil_ids: int = 1000
    errors: float = 0.001
    """Share of nodes that answer every query with an error (201 or 202)."""
    session_shape: float = 0.43
    """Online sessions are Weibull with this shape and `session_scale`: median 200
    minutes, 3 % over 9,000 (Wang and Kangasharju, P2P 2013). 0 here: no churn."""
    session_scale: float = 470.0
    """Minutes."""
    availability: float = 0.8
    """Share of the time a node is online (gaps between sessions are drawn like sessions,
    scaled to it): an assumption, no measurement of offline gaps was found; it sets how
    many nodes the emulator holds, hardly what a sweep of an hour sees."""
    bep42_from: str = "public"
    """The address BEP 42 ids are made for. `public`: a public IPv4 the emulator gives each
    of its IPs (its `public_ip`), as on the real DHT, where such ids spread evenly over the
    keyspace; the crawler, which sees the 127.x.y.z address, counts them as not BEP 42.
    `loopback`: the 127.x.y.z address itself (the crawler's check then counts them), but
    the first octet's two masked bits are the same for every node, and the ids crowd into
    half of the 13-bit prefixes (zones 7 times as full as others at 13 bits and more)."""
    swing: float = 0.0
    """The online population's daily swing, as a share of its mean: nodes x (1 + swing x
    sin(2 pi t / swing_period)). 0.28 is the public DHT's 15 to 27 million a day (Wang and
    Kangasharju, P2P 2013: a clear daily cycle); 0 here: no swing."""
    swing_period: float = 86400.0
    """Seconds of one cycle (3600: a day compressed into an hour)."""
    stale_minutes: float = 15.0
    """How long a node that left stays listed in others' tables (libtorrent replaces a
    failed entry at once when it has a replacement, else after 20 failures)."""
    sample_interval: int = 21600
    """The `interval` of a BEP 51 reply (libtorrent's default, 6 hours)."""
    num_median: float = 50.0
    """Infohashes a node stores (BEP 51 `num`), log-normal around this, at most 2,000
    (libtorrent's dht_max_torrents)."""
    swarms: int = 0
    """Infohashes with peers (`swarm_info_hash(seed, j)`, j < swarms, listed in the truth):
    each swarm's `swarm_peers` peers are stored on the 8 answering nodes closest to its
    infohash, where announces leave them, and a get_peers lookup must reach one of them.
    0: no swarm (every get_peers is answered with nodes)."""
    swarm_peers: int = 20
    base_port: int = 20000
    per_ip_limit: float = 5.0
    """libtorrent's dos_blocker: `per_ip_limit` x `per_ip_window` datagrams from one IP
    within a window of `per_ip_window` seconds from its first, and that IP is ignored for
    `per_ip_ban` seconds (dht_block_ratelimit 5, dht_block_timeout 300). 0: no limit."""
    per_ip_window: float = 10.0
    per_ip_ban: float = 300.0
    clients: tuple[Client, ...] = field(default=CLIENTS)

    @classmethod
    def plain(cls, **overrides) -> "EmulationConfig":
        """A well-behaved network: every node answers at once, nothing is lost."""
        values = dict(silent=0.0, gone=0.0, loss=0.0, rtt_median=0.0, rtt_tail=0.0,
                      nat_share=0.0, sybil_share=0.0, errors=0.0, session_shape=0.0,
                      availability=1.0)
        values.update(overrides)
        return cls(**values)

    def as_dict(self) -> dict:
        out = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "clients":
                value = [{"code": c.code, "v": c.v.hex() if c.v else None, "share": c.share,
                          "bep51": c.bep51, "bep42": c.bep42} for c in value]
            out[item.name] = value
        return out

    @property
    def churn(self) -> bool:
        return self.session_shape > 0 and self.availability < 1.0


# --- CRC32C (BEP 42), vectorised ----------------------------------------------------------

def _crc32c_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table[n] = crc
    return table


_CRC_TABLE = _crc32c_table()


def crc32c_rows(rows: np.ndarray) -> np.ndarray:
    """CRC32C of each row of a (n, m) uint8 array (as `crc32c.crc32c` of its bytes)."""
    crc = np.full(rows.shape[0], 0xFFFFFFFF, dtype=np.uint32)
    for column in range(rows.shape[1]):
        crc = _CRC_TABLE[(crc ^ rows[:, column]) & 0xFF] ^ (crc >> np.uint32(8))
    return crc ^ np.uint32(0xFFFFFFFF)


def bep42_prefix(ips: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The CRC32C whose first 21 bits a BEP 42 id for each IPv4 (uint32) with random
    value `r` (0..7) must carry."""
    masked = np.empty((ips.shape[0], 4), dtype=np.uint8)
    for column, mask in enumerate((0x03, 0x0F, 0x3F, 0xFF)):
        masked[:, column] = (ips >> np.uint32(24 - 8 * column)) & np.uint32(mask)
    masked[:, 0] |= (r.astype(np.uint8) & 0x07) << 5
    return crc32c_rows(masked)


def public_ip(ips: np.ndarray, salt: int) -> np.ndarray:
    """A public IPv4 for each emulated (loopback) IPv4: a fixed pseudo-random 32-bit value
    (uint32), the same for an IP every time."""
    value = ips.astype(np.uint64) ^ np.uint64(salt & 0xFFFFFFFF)
    value = (value * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
    value ^= value >> np.uint64(15)
    value = (value * np.uint64(0x85EBCA77)) & np.uint64(0xFFFFFFFF)
    value ^= value >> np.uint64(13)
    return value.astype(np.uint32)


def _mix(value: int) -> int:
    """A 64-bit integer hash (splitmix64's finaliser)."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def swarm_info_hash(seed: int, index: int) -> bytes:
    """The infohash of emulated swarm `index` of the DHT of `seed`."""
    return hashlib.sha1(b"mldht emulated swarm %d %d" % (seed, index)).digest()


def _bstr(value: bytes) -> bytes:
    return b"%d:%s" % (len(value), value)


# --- the network -----------------------------------------------------------------------------

class EmulatedNetwork:
    """The virtual nodes and their answers (see the module's docstring)."""

    def __init__(self, config: EmulationConfig) -> None:
        self.config = config
        nodes = config.nodes
        if nodes < 16:
            raise ValueError("an emulated DHT needs at least 16 nodes")
        rng = np.random.default_rng(config.seed)
        # The population whose online share is `nodes` on average: each node is online for
        # session / (session + gap) of the time, whose mean is what the draw gives.
        churn_rng = np.random.default_rng([config.seed, 1])
        availability = self._draw_schedules(churn_rng, 200_000, availability_only=True) \
            if config.churn else 1.0
        # ...and the nodes that are gone for good, still listed.
        # ...and, with a daily swing, enough for its peak.
        self.population = population = max(nodes, round(
            nodes * (1.0 + max(0.0, config.swing)) / availability
            / (1.0 - min(config.gone, 0.9))))
        self._salt = int(rng.integers(1 << 62))
        self._layout(population, rng)
        slot_ips, slot_ports = self._slot_addresses(np.arange(population, dtype=np.int64))

        # What each slot is: client, gone, silent, erring (Sybils answer, as themselves).
        shares = np.array([c.share for c in config.clients], dtype=float)
        client = rng.choice(len(config.clients), size=population, p=shares / shares.sum())
        client = client.astype(np.uint8)
        gone = rng.random(population) < config.gone
        silent = (rng.random(population) < config.silent) & ~gone
        erring = rng.random(population) < config.errors
        sybil = np.arange(population) < self.sybil_slots
        for mask in (gone, silent, erring):
            mask[sybil] = False

        # Ids: random, or BEP 42 for the slot's IP where its client makes them.
        ids = rng.integers(0, 256, size=(population, 20), dtype=np.uint8)
        bep42_share = np.array([c.bep42 for c in config.clients])[client]
        secure = (rng.random(population) < bep42_share) & ~sybil
        if secure.any():
            where = np.nonzero(secure)[0]
            r = ids[where, 19] & 0x07
            source = slot_ips[where].astype(np.uint32)
            if config.bep42_from == "public":
                source = public_ip(source, self._salt)
            elif config.bep42_from != "loopback":
                raise ValueError("bep42_from is 'public' or 'loopback'")
            crc = bep42_prefix(source, r)
            ids[where, 0] = (crc >> 24) & 0xFF
            ids[where, 1] = (crc >> 16) & 0xFF
            ids[where, 2] = ((crc >> 8) & 0xF8) | (ids[where, 2] & 0x07)
        keys = self._keys_of(ids)
        while True:  # 64-bit prefixes unique (a clash is about 1 in 10^5 at 25 million)
            order = np.argsort(keys, kind="stable")
            ordered = keys[order]
            clash = np.nonzero(ordered[1:] == ordered[:-1])[0]
            if clash.size == 0:
                break
            again = order[clash + 1]
            ids[again] = rng.integers(0, 256, size=(again.size, 20), dtype=np.uint8)
            secure[again] = False
            keys[again] = self._keys_of(ids[again])
        self.slot_of = order.astype(np.uint32)
        """rank (position in id order) -> slot."""
        self.rank_of = np.empty(population, dtype=np.uint32)
        self.rank_of[order] = np.arange(population, dtype=np.uint32)
        self.keys = ordered.astype(np.uint64)
        self._keys = memoryview(self.keys).cast("B").cast("Q")
        self.ids = ids[order].tobytes()
        del ids
        packed = np.empty((population, 6), dtype=np.uint8)
        ips, ports = slot_ips[order], slot_ports[order]
        for column in range(4):
            packed[:, column] = (ips >> (24 - 8 * column)) & 0xFF
        packed[:, 4] = ports >> 8
        packed[:, 5] = ports & 0xFF
        self.addresses = packed.tobytes()
        """6 bytes (IPv4, port) per rank."""
        self.client = client[order]
        self.secure = secure[order]
        self.silent = silent[order]
        self.gone = gone[order]
        self.sybil = sybil[order]
        # flags: 1 silent, 2 errs, 4 sybil, 8 never leaves (the bootstrap node), 16 gone
        flags = silent.astype(np.uint8) | (erring.astype(np.uint8) << 1) | \
            (sybil.astype(np.uint8) << 2) | (gone.astype(np.uint8) << 4)
        self.flags = bytearray(flags[order].tobytes())
        self.zone_of = (self.keys >> np.uint64(56)).astype(np.uint8)

        # Round trips (ms) and BEP 51 `num`, per rank.
        rtt = np.exp(rng.normal(math.log(max(config.rtt_median, 1e-6)), config.rtt_sigma,
                                population)) * 1000.0
        tail = rng.random(population) < config.rtt_tail
        rtt[tail] = rng.uniform(1000.0, 5000.0, int(tail.sum()))
        if config.rtt_median <= 0:
            rtt[:] = 0.0
        self.rtt_ms = np.clip(rtt, 0, 10_000).astype(np.uint16)
        self._rtt = memoryview(self.rtt_ms).cast("B").cast("H")
        num = np.exp(rng.normal(math.log(config.num_median), 1.5, population))
        self.num = np.clip(num, 0, 2000).astype(np.uint32)
        self._num = memoryview(self.num).cast("B").cast("I")

        # Churn: node r is online when (t + phase) mod (session + gap) < session (seconds).
        if config.churn:
            session, period, phase = self._draw_schedules(churn_rng, population)
            self.session = session[order]
            self.period = period[order]
            self.phase = phase[order]
            self._session = memoryview(self.session).cast("B").cast("I")
            self._period = memoryview(self.period).cast("B").cast("I")
            self._phase = memoryview(self.phase).cast("B").cast("I")
        self.stale_seconds = config.stale_minutes * 60.0
        # The daily swing: node r is awake while its draw is under the day's level.
        self.awake = np.random.default_rng([config.seed, 2]).random(population,
                                                                    dtype=np.float32) \
            if config.swing > 0 else None
        self._churn = config.churn or config.swing > 0
        self._schedule = config.churn
        self._awake_view = None if self.awake is None else \
            memoryview(self.awake).cast("B").cast("f")
        self._client_v = [c.v for c in config.clients]
        self._client_bep51 = [c.bep51 for c in config.clients]
        self._client_list = self.client.tobytes()
        self.bootstrap_rank = self._pick_bootstrap()
        self.swarms: dict[bytes, tuple[frozenset[int], bytes]] = {}
        """infohash -> (the ranks storing its peers, the bencoded `values` list)."""
        for index in range(config.swarms):
            self._place_swarm(index)
        self.set_time(0.0)

    def _place_swarm(self, index: int) -> None:
        info_hash = swarm_info_hash(self.config.seed, index)
        key = int.from_bytes(info_hash[:8], "big")
        where = bisect_left(self._keys, key)
        # The 8 closest answering nodes lie within a few hundred ranks of the key's place
        # unless nearly everyone around is silent; widen until 8 are found.
        for reach in (64, 512, 4096, self.population):
            low, high = max(0, where - reach), min(self.population, where + reach)
            ranks = [r for r in range(low, high) if not self.flags[r] & (1 | 2 | 4 | 16)]
            if len(ranks) >= K or reach >= self.population:
                break
        holders = frozenset(sorted(ranks, key=lambda r: self._keys[r] ^ key)[:K])
        peers = b"".join(
            _bstr(bytes((127, 254, (index >> 8) & 0xFF, index & 0xFF))
                  + (6881 + peer).to_bytes(2, "big"))
            for peer in range(self.config.swarm_peers))
        self.swarms[info_hash] = (holders, b"l" + peers + b"e")

    # --- layout: slots and addresses -------------------------------------------------------

    def _layout(self, population: int, rng: np.random.Generator) -> None:
        config = self.config
        sybil_ids = max(1, config.sybil_ids)
        self.sybil_ips = int(population * config.sybil_share) // sybil_ids
        self.sybil_ids = sybil_ids
        self.sybil_slots = self.sybil_ips * sybil_ids
        nat_nodes = int(round((population - self.sybil_slots) * config.nat_share))
        sizes = []
        total = 0
        while total < nat_nodes:  # 2 and up, fewer the more (geometric), at most the cap
            size = min(1 + int(rng.geometric(0.6)), max(2, config.nat_group_max))
            size = min(size, nat_nodes - total) if nat_nodes - total >= 2 else 2
            sizes.append(size)
            total += size
        self.nat_sizes = np.array(sizes, dtype=np.uint32)
        self.nat_starts = (self.sybil_slots + np.concatenate(
            ([0], np.cumsum(self.nat_sizes)[:-1]))).astype(np.uint64) if sizes else \
            np.zeros(0, dtype=np.uint64)
        self.nat_slots = total
        self.nat_ips = len(sizes)
        self.single_start = self.sybil_slots + total
        singles = population - self.single_start
        free_ips = IP_LIMIT - IP_BASE - self.sybil_ips - self.nat_ips
        self.single_ips = max(1, min(singles, free_ips))
        ports = max(sybil_ids if self.sybil_ips else 1, config.nat_group_max if sizes else 1,
                    -(-singles // self.single_ips))
        self.ports = ports
        if config.base_port + ports > 65536:
            raise ValueError(f"{ports} ports from {config.base_port} do not fit")

    def _slot_addresses(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """IPv4 (uint32) and port of each slot."""
        ips = np.zeros(slots.shape, dtype=np.int64)
        ports = np.zeros(slots.shape, dtype=np.int64)
        sybil = slots < self.sybil_slots
        ips[sybil] = slots[sybil] // self.sybil_ids
        ports[sybil] = slots[sybil] % self.sybil_ids
        nat = (slots >= self.sybil_slots) & (slots < self.single_start)
        if nat.any():
            group = np.searchsorted(self.nat_starts, slots[nat], side="right") - 1
            ips[nat] = self.sybil_ips + group
            ports[nat] = slots[nat] - self.nat_starts[group].astype(np.int64)
        single = slots >= self.single_start
        offset = slots[single] - self.single_start
        ips[single] = self.sybil_ips + self.nat_ips + offset % self.single_ips
        ports[single] = offset // self.single_ips
        return (ips + IP_BASE).astype(np.uint32), (ports + self.config.base_port).astype(np.int64)

    def rank_at(self, ip: int, port: int) -> int | None:
        """The rank of the virtual node at (IPv4 as an integer, port), or None."""
        index, offset = ip - IP_BASE, port - self.config.base_port
        if index < 0 or offset < 0 or offset >= self.ports:
            return None
        if index < self.sybil_ips:
            if offset >= self.sybil_ids:
                return None
            slot = index * self.sybil_ids + offset
        elif index < self.sybil_ips + self.nat_ips:
            group = index - self.sybil_ips
            if offset >= int(self.nat_sizes[group]):
                return None
            slot = int(self.nat_starts[group]) + offset
        else:
            slot = self.single_start + offset * self.single_ips + \
                (index - self.sybil_ips - self.nat_ips)
            if index - self.sybil_ips - self.nat_ips >= self.single_ips:
                return None
        if slot >= self.population:
            return None
        return int(self.rank_of[slot])

    def address_of(self, rank: int) -> tuple[str, int]:
        packed = self.addresses[rank * 6:rank * 6 + 6]
        return ".".join(str(b) for b in packed[:4]), int.from_bytes(packed[4:], "big")

    def id_of(self, rank: int) -> bytes:
        return self.ids[rank * 20:rank * 20 + 20]

    def host_of(self, rank: int) -> int:
        """Who keeps the per-IP limit: the node itself, or the whole Sybil IP."""
        slot = int(self.slot_of[rank])
        return -1 - slot // self.sybil_ids if slot < self.sybil_slots else rank

    def _pick_bootstrap(self) -> int:
        """A node that answers and never leaves, with a plain client and a round trip
        under a second: the router (one in the slow tail failed every join)."""
        fast = max(1000.0 * self.config.rtt_median * 2, 1.0)
        for step in range(self.population):  # spread out, not always the lowest ids
            rank = step * 7919 % self.population
            if not self.flags[rank] and self._client_bep51[self._client_list[rank]] != "drop" \
                    and self._rtt[rank] <= fast:
                self.flags[rank] |= 8
                return rank
        rank = int(np.nonzero(~self.silent & ~self.gone)[0][0])
        self.flags[rank] = 8
        return rank

    def _draw_schedules(self, rng: np.random.Generator, count: int,
                        availability_only: bool = False):
        """Sessions and gaps (seconds; Weibull, `session_shape` and `session_scale`, the
        gaps scaled so that a node is online `availability` of the time) and phases, for
        `count` nodes; or only the share of nodes online at a moment, on average."""
        config = self.config
        scale = config.session_scale * 60.0
        share = config.availability
        session = rng.weibull(config.session_shape, count) * scale
        gap = rng.weibull(config.session_shape, count) * scale * ((1.0 - share) / share)
        session = np.clip(session, 60.0, 60 * 86400.0).astype(np.uint32)
        gap = np.clip(gap, 60.0, 60 * 86400.0).astype(np.uint32)
        period = session + gap
        if availability_only:
            return float((session / period).mean())
        phase = (rng.random(count) * period).astype(np.uint32)
        return session, period, phase

    @staticmethod
    def _keys_of(ids: np.ndarray) -> np.ndarray:
        return ids[:, :8].copy().view(">u8").reshape(-1).astype(np.uint64)

    # --- time ------------------------------------------------------------------------------

    def set_time(self, now: float) -> None:
        """The time (seconds since the start) the nodes' states are read at: the server
        calls this every few seconds (sessions last hours). Each node's state is worked
        out from its schedule when a query needs it: recomputing every node's at once
        took seconds at 20 million, seconds in which nothing was answered."""
        self.now = now
        self._level_now = self.level(now)
        self._level_listed = self._levels(now - self.stale_seconds, now)[1]

    def online(self, rank: int, now: float | None = None) -> bool:
        """Online now (gone nodes never are; the bootstrap node and Sybils always are)."""
        flags = self.flags[rank]
        if flags & 16:
            return False
        if flags & 12 or not self._churn:
            return True
        if self._awake_view is not None and self._awake_view[rank] >= self._level_now:
            return False
        if not self._schedule:
            return True
        return (self.now + self._phase[rank]) % self._period[rank] < self._session[rank]

    def _listable(self, rank: int, now: float | None = None) -> bool:
        """Whether others' tables still list the node: online, or gone for less than the
        time a real node takes to evict it (or gone for good, and never evicted)."""
        if not self._churn:
            return True
        flags = self.flags[rank]
        if flags & 28:
            return True
        if self._awake_view is not None and self._awake_view[rank] >= self._level_listed:
            return False
        if not self._schedule:
            return True
        position = (self.now + self._phase[rank]) % self._period[rank]
        return position - self._session[rank] < self.stale_seconds

    def level(self, now: float) -> float:
        """The share of the nodes awake at `now` under the daily swing (1 at its peak)."""
        swing = self.config.swing
        if swing <= 0:
            return 1.0
        return (1.0 + swing * math.sin(2 * math.pi * now / self.config.swing_period)) \
            / (1.0 + swing)

    def _levels(self, start: float, end: float) -> tuple[float, float]:
        """The lowest and highest `level` over [start, end] (sampled: the swing is slow)."""
        points = [self.level(start + (end - start) * i / 16) for i in range(17)]
        return min(points), max(points)

    def _awake(self, low: float) -> np.ndarray | bool:
        return True if self.awake is None or low >= 1.0 else self.awake < low

    def _schedule_mask(self, start: float, keep, awake=True) -> np.ndarray:
        """`keep(position)` of every node's place in its schedule at `start` (seconds
        into its session-and-gap period), and `awake` (the daily swing): gone nodes out;
        the bootstrap node and the Sybils (servers) always in."""
        if not self.config.churn:
            mask = ~self.gone & awake
        else:
            position = np.fmod(start + self.phase.astype(np.float64), self.period)
            mask = keep(position) & ~self.gone & awake
        mask[self.bootstrap_rank] = True
        mask |= self.sybil
        return mask

    def online_mask(self, now: float) -> np.ndarray:
        return self._schedule_mask(now, lambda position: position < self.session,
                                   self._awake(self.level(now)))

    def online_during_mask(self, start: float, end: float) -> np.ndarray:
        """Nodes online at some moment of [start, end] (under a swing: awake at its
        highest, an upper bound)."""
        return self._schedule_mask(start, lambda position: (position < self.session) |
                                   (position + (end - start) >= self.period),
                                   self._awake(self._levels(start, end)[1]))

    def online_throughout_mask(self, start: float, end: float) -> np.ndarray:
        """Nodes online for the whole of [start, end]."""
        return self._schedule_mask(start,
                                   lambda position: position + (end - start) < self.session,
                                   self._awake(self._levels(start, end)[0]))

    def listed_mask(self, now: float) -> np.ndarray:
        """Nodes others' tables list at `now`: online, or gone less than `stale_minutes`
        ago (from their schedule or, under a swing, asleep that recently), or gone for
        good."""
        if not self._churn:
            return np.ones(self.population, dtype=bool)
        awake = self._awake(self._levels(now - self.stale_seconds, now)[1])
        if self.config.churn:
            position = np.fmod(now + self.phase.astype(np.float64), self.period)
            scheduled = (position < self.session) | \
                (position - self.session < self.stale_seconds)
        else:
            scheduled = True
        mask = (scheduled & awake) | self.gone
        mask[self.bootstrap_rank] = True
        mask |= self.sybil  # a Sybil cluster is a server: always up
        return mask

    def round_trip(self, rank: int) -> float:
        return self._rtt[rank] / 1000.0

    # --- routing tables ----------------------------------------------------------------------

    def _range(self, key: int, bits: int, rank: int) -> tuple[int, int]:
        """Ranks [low, high) of the ids sharing the first `bits` bits with `key` (a
        subtree), searched near `rank` first (it lies in or next to the subtree)."""
        if bits <= 0:
            return 0, self.population
        span = (1 << (64 - bits)) - 1 if bits < 64 else 0
        first = key & ~span & MASK64
        last = key | span
        low = self._search(first, rank)
        if last >= MASK64:
            return low, self.population
        return low, self._search(last + 1, rank)

    def _search(self, key: int, rank: int) -> int:
        """bisect_left for `key`, looking within 64 ranks of `rank` first."""
        keys, size = self._keys, self.population
        low, high = max(0, rank - 64), min(size, rank + 65)
        if low > 0 and keys[low - 1] >= key:
            return bisect_left(keys, key, 0, low)
        if high < size and keys[high] < key:
            return bisect_left(keys, key, high, size)
        return bisect_left(keys, key, low, high)

    def _bucket(self, rank: int, own: int, depth: int, now: float) -> list[int]:
        """The entries of bucket `depth` of node `rank` (key `own`)."""
        low, high = self._range(own ^ (1 << (63 - depth)), depth + 1, rank)
        return self._entries(rank, depth, low, high, now)

    def _entries(self, rank: int, depth: int, low: int, high: int, now: float) -> list[int]:
        """Bucket `depth` of node `rank`, whose subtree is ranks [low, high): all of them
        where they fit, else K picked pseudo-randomly; those gone too long left out (or,
        in a full bucket, replaced by the next of the subtree)."""
        size = high - low
        if size <= 0:
            return []
        churn = self._churn
        if size <= K:
            if rank == self.bootstrap_rank:
                return [r for r in range(low, high) if self._answers(r)]
            if not churn:
                return list(range(low, high))
            listable = self._listable
            return [r for r in range(low, high) if listable(r)]
        start = _mix(self._salt ^ (rank << 7) ^ depth)
        stride = size / K
        picked = [low + (start + int(slot * stride)) % size for slot in range(K)]
        if rank == self.bootstrap_rank:
            return self._router_entries(picked, low, size)
        if churn:
            listable = self._listable
            chosen = set(picked)
            for index, entry in enumerate(picked):
                if listable(entry):
                    continue
                picked[index] = -1  # gone: replaced by the next node of its subtree...
                for _ in range(8):
                    entry = low + (entry - low + 1) % size
                    if listable(entry) and entry not in chosen:
                        chosen.add(entry)
                        picked[index] = entry
                        break
            # ...or left out when there is none (a subtree just over 8 nodes, some gone:
            # the bucket holds fewer), never listed past its eviction.
            picked = [entry for entry in picked if entry >= 0]
        return picked

    def _answers(self, rank: int) -> bool:
        return not self.flags[rank] & (1 | 16) and self.online(rank)

    def _router_entries(self, picked: list[int], low: int, size: int) -> list[int]:
        """The bootstrap node's bucket: a router hands out nodes it has verified (they
        answered its pings), never the silent or gone ones ordinary tables hold; each pick
        that does not answer gives way to the next node of its subtree that does."""
        chosen = set()
        entries = []
        for entry in picked:
            for _ in range(64):
                if self._answers(entry) and entry not in chosen:
                    chosen.add(entry)
                    entries.append(entry)
                    break
                entry = low + (entry - low + 1) % size
        return entries

    def closest(self, rank: int, target: int, now: float) -> list[int]:
        """The ranks node `rank` lists for `target` (the first 64 bits of an id): the 8
        entries of its routing table closest to it by XOR.

        The target's own bucket comes first (every entry there is closer than any other),
        then the deeper buckets (the node's side of that subtree), then the shallower ones
        in turn, each farther than all before it."""
        keys = self._keys
        own = keys[rank]
        shared = 64 - (own ^ target).bit_length()
        deepest = self._deepest(rank, own)
        if shared <= deepest:
            found = self._bucket(rank, own, shared, now)
            if len(found) >= K:
                found.sort(key=lambda r: keys[r] ^ target)
                return found[:K]
        # Near its own id: from the deepest bucket up, each subtree one search wider.
        found = []
        low, high = rank, rank + 1
        search = self._search
        for depth in range(deepest, -1, -1):
            span = (1 << (64 - depth)) - 1
            if (own >> (63 - depth)) & 1:  # its side is the upper half: the bucket below
                wider = search(own & ~span, rank)
                found += self._entries(rank, depth, wider, low, now)
                low = wider
            else:
                last = own | span
                wider = search(last + 1, rank) if last < MASK64 else self.population
                found += self._entries(rank, depth, high, wider, now)
                high = wider
            if depth <= shared and len(found) >= K:
                break
        found.sort(key=lambda r: keys[r] ^ target)
        return found[:K]

    def _deepest(self, rank: int, own: int) -> int:
        """The deepest bucket of node `rank` that holds anyone (shared bits with its
        nearest neighbour in id order)."""
        keys = self._keys
        best = 0
        if rank > 0:
            best = 64 - (own ^ keys[rank - 1]).bit_length()
        if rank + 1 < self.population:
            best = max(best, 64 - (own ^ keys[rank + 1]).bit_length())
        return min(best, 63)

    def compact_nodes(self, ranks: list[int]) -> bytes:
        ids, addresses = self.ids, self.addresses
        return b"".join(ids[r * 20:r * 20 + 20] + addresses[r * 6:r * 6 + 6] for r in ranks)

    # --- answering ----------------------------------------------------------------------------

    def token(self, source_ip: bytes, rank: int) -> bytes:
        return (_mix(self._salt ^ int.from_bytes(source_ip, "big") ^ (rank << 32))
                & 0xFFFFFFFF).to_bytes(4, "big")

    def answer(self, datagram: bytes, source: tuple[bytes, int], rank: int,
               now: float) -> tuple[bytes | None, str, list[int]]:
        """What node `rank` sends back to `datagram` from `source` (packed IPv4, port):
        (reply or None, what happened, the ranks it listed). What happened is `answered`,
        `error`, `silent`, `offline`, `malformed` or `dropped` (a method it ignores)."""
        flags = self.flags[rank]
        if flags & 16 or not self.online(rank):
            return None, "offline", []
        if flags & 1:
            return None, "silent", []
        try:
            message = decode_bencode(datagram)
        except Exception:  # noqa: BLE001 - not bencode: a real node drops it
            return None, "malformed", []
        if not isinstance(message, dict):
            return None, "malformed", []
        tid = message.get(b"t")
        if message.get(b"y") != b"q" or not isinstance(tid, bytes):
            return None, "malformed", []
        client = self._client_list[rank]
        version = self._client_v[client]
        args = message.get(b"a")
        method = message.get(b"q")
        if not isinstance(args, dict) or not isinstance(args.get(b"id"), bytes) or \
                len(args[b"id"]) != 20 or not isinstance(method, bytes):
            return self._error(tid, version, ERROR_PROTOCOL, b"invalid arguments"), "error", []
        if flags & 2:
            code = ERROR_GENERIC if rank & 1 else ERROR_SERVER
            return self._error(tid, version, code, b"server error"), "error", []
        behaviour = self._client_bep51[client]
        if flags & 4 and method not in (b"ping", b"find_node"):
            return None, "dropped", []  # a Sybil: in every table, silent on the rest
        body = b"2:id20:" + self.ids[rank * 20:rank * 20 + 20]
        listed: list[int] = []
        if method == b"ping" or method == b"announce_peer" or method == b"put":
            pass
        else:
            known = method in (b"find_node", b"get_peers", b"get") or \
                (method == b"sample_infohashes" and behaviour == "answer")
            target = args.get(b"info_hash") if method == b"get_peers" else args.get(b"target")
            if not known:
                # An unknown method: some take any query with a target for find_node.
                if behaviour == "drop":
                    return None, "dropped", []
                if behaviour != "nodes" or not isinstance(target, bytes):
                    return self._error(tid, version, ERROR_METHOD, b"method unknown"), \
                        "error", []
            if not isinstance(target, bytes) or len(target) != 20:
                return self._error(tid, version, ERROR_PROTOCOL, b"invalid target"), "error", []
            listed = self.closest(rank, int.from_bytes(target[:8], "big"), now)
            nodes = self.compact_nodes(listed)
            if method == b"sample_infohashes" and known:
                num = self._num[rank]
                count = min(num, MAX_SAMPLES)
                start = _mix(self._salt ^ rank) % max(1, self.population - count) * 20
                samples = self.ids[start:start + 20 * count]
                body += (b"8:intervali%de5:nodes%s3:numi%de7:samples%s"
                         % (self.config.sample_interval, _bstr(nodes), num, _bstr(samples)))
            else:
                body += b"5:nodes" + _bstr(nodes)
                if method in (b"get_peers", b"get"):
                    body += b"5:token" + _bstr(self.token(source[0], rank))
                    swarm = self.swarms.get(target) if method == b"get_peers" else None
                    if swarm is not None and rank in swarm[0]:
                        body += b"6:values" + swarm[1]
        reply = b"d2:ip6:" + source[0] + source[1].to_bytes(2, "big") + b"1:rd" + body + \
            b"e1:t" + _bstr(tid) + (b"1:v" + _bstr(version) if version else b"") + b"1:y1:re"
        return reply, "answered", listed

    @staticmethod
    def _error(tid: bytes, version: bytes | None, code: int, text: bytes) -> bytes:
        return (b"d1:eli%de%se1:t%s%s1:y1:ee" % (code, _bstr(text), _bstr(tid),
                                                  b"1:v" + _bstr(version) if version else b""))

    # --- the truth ------------------------------------------------------------------------------

    def client_names(self) -> list[str]:
        return [c.code for c in self.config.clients]
