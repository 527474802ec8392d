"""The public API around the engine: `random_id_with_prefix`, and the asyncio `Node` on
loopback (tests/dhtnet.py): `get_peers_many`, thousands of lookups through a small
outbound budget, and `Node.events()`."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dhtnet import loopback_ip, start_network
from mldht import DHTNode, InfoHash, NodeConfig, NodeId
from mldht.engine import QueryReceived
from mldht.errors import InvalidInput
from mldht.ids import ID_BITS, common_prefix_bits, random_id_in_bucket, random_id_with_prefix
from mldht.krpc import decode_bencode, encode_bencode
from mldht.routing import NodeState

K = 8


def random_id(rng: random.Random) -> NodeId:
    return NodeId(rng.getrandbits(160).to_bytes(20, "big"))


# --- random_id_with_prefix ----------------------------------------------------------------------

BITS = [0, 1, 7, 8, 13, 160]


@pytest.mark.parametrize("bits", BITS)
def test_random_id_with_prefix_keeps_the_prefix_in_both_forms(bits):
    rng = random.Random(bits)
    for _ in range(50):
        prefix = random_id(rng)
        made = random_id_with_prefix(prefix, bits, rng)
        assert isinstance(made, NodeId)
        assert common_prefix_bits(made, prefix) >= bits
        value = int.from_bytes(prefix, "big") >> (ID_BITS - bits)
        as_int = random_id_with_prefix(value, bits, rng)
        assert int.from_bytes(as_int, "big") >> (ID_BITS - bits) == value
        assert common_prefix_bits(as_int, prefix) >= bits
    # A prefix shorter than an id is its leading bytes: 13 bits of b"\xab\xcd".
    if bits <= 16:
        short = random_id_with_prefix(b"\xab\xcd", bits, rng)
        assert int.from_bytes(short, "big") >> (ID_BITS - bits) == 0xABCD >> (16 - bits)
    assert random_id_with_prefix(prefix, 160, rng) == prefix


@given(prefix=st.binary(min_size=20, max_size=20), bits=st.integers(0, 160),
       seed=st.integers(0, 2 ** 32))
def test_random_id_with_prefix_keeps_any_prefix(prefix, bits, seed):
    made = random_id_with_prefix(prefix, bits, random.Random(seed))
    assert common_prefix_bits(made, prefix) >= bits
    high = int.from_bytes(prefix, "big") >> (ID_BITS - bits)
    assert int.from_bytes(random_id_with_prefix(high, bits), "big") >> (ID_BITS - bits) == high


@pytest.mark.parametrize("bits,prefix", [(-1, 0), (161, 0), (1, 2), (8, 256), (13, -1),
                                         (0, 1), (-3, b"\x00" * 20), (200, b"\x00" * 20)])
def test_random_id_with_prefix_refuses_bad_bits(bits, prefix):
    with pytest.raises(InvalidInput):
        random_id_with_prefix(prefix, bits)


@settings(max_examples=30, deadline=None)
@given(bits=st.sampled_from([0, 1, 7, 8, 13, 100, 150]), seed=st.integers(0, 2 ** 32))
def test_the_bits_after_the_prefix_look_random(bits, seed):
    rng = random.Random(seed)
    prefix = random_id(rng)
    low_bits = ID_BITS - bits
    ids = [int.from_bytes(random_id_with_prefix(prefix, bits, rng), "big") for _ in range(400)]
    if low_bits >= 40:  # a repeat among 400 draws of 40 random bits: 1 in 10 million
        assert len(set(ids)) == len(ids)
    # Every bit after the prefix is 1 in about half the ids (400 draws: sd 10, so 140-260
    # is 6 sd), and with the default rng too.
    for position in range(low_bits):
        ones = sum((value >> position) & 1 for value in ids)
        assert 140 < ones < 260, (bits, position, ones)
    others = [random_id_with_prefix(prefix, bits) for _ in range(20)]  # the OS's randomness
    assert all(common_prefix_bits(other, prefix) >= bits for other in others)
    if low_bits >= 40:
        assert len(set(others)) == 20


# --- the asyncio Node on loopback -----------------------------------------------------------------


async def _sample_user_lookups(node: DHTNode, samples: list[int], stop: asyncio.Event) -> None:
    """Count the user get_peers operations in `node.status()` every 2 ms."""
    while not stop.is_set():
        status = node.status()
        samples.append(sum(1 for op in status["operations"]
                           if op["kind"] == "get_peers" and op["purpose"] == "user"))
        await asyncio.sleep(0.002)


@pytest.mark.network
async def test_get_peers_many_gives_one_result_per_infohash_within_the_concurrency():
    net = await start_network(30, first_index=60)
    try:
        rng = random.Random(91)
        hashes = [InfoHash(random_id(rng)) for _ in range(50)]
        announced = {}
        async with asyncio.timeout(30):
            for index, info_hash in enumerate(hashes[::5]):  # 10 of the 50
                announcer = net.nodes[1 + index % 10]
                await announcer.announce(info_hash, 7000 + index, timeout=10)
                announced[info_hash] = [(announcer.address[0], 7000 + index)]
            seeker = net.nodes[11]
            samples: list[int] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample_user_lookups(seeker, samples, stop))
            results = [result async for result in seeker.get_peers_many(
                hashes, concurrency=6, timeout=10)]
            stop.set()
            await sampler
        assert sorted(r.info_hash for r in results) == sorted(hashes)
        for result in results:
            assert result.error is None and result.summary is not None
            assert result.peers == announced.get(result.info_hash, []), result
            assert result.summary.peers == len(result.peers)
        assert max(samples) <= 6 and max(samples) >= 4, samples
        assert len(samples) > 10
    finally:
        await net.close()


@pytest.mark.network
async def test_leaving_get_peers_many_early_cancels_the_lookups_still_running():
    net = await start_network(8, first_index=80)
    try:
        seeker = net.nodes[5]
        rng = random.Random(92)
        hashes = [InfoHash(random_id(rng)) for _ in range(40)]

        def running() -> list[dict]:
            return [op for op in seeker.status()["operations"]
                    if op["kind"] == "get_peers" and op["purpose"] == "user"]
        async with asyncio.timeout(30):
            got = []
            async for result in seeker.get_peers_many(hashes, concurrency=8, timeout=10):
                got.append(result)
                if len(got) == 3:
                    assert len(running()) >= 5  # the loop is left with lookups running
                    break
            for _ in range(10):  # the generator is closed by its finalizer, soon after
                await asyncio.sleep(0.01)
        assert running() == []
        assert seeker.engine.transactions.in_flight.get("get_peers", 0) == 0
        assert seeker.engine.transactions.queued == 0
        assert not [h for h in seeker._peer_sinks]  # nothing left to deliver to
        # With a reference kept, aclose() does it at once.
        async with asyncio.timeout(30):
            lookups = seeker.get_peers_many(hashes, concurrency=8, timeout=10)
            await anext(lookups)
            assert running()
            await lookups.aclose()
            assert running() == []
    finally:
        await net.close()


async def _start_network_around(own: NodeId, count: int, first_index: int,
                                config: NodeConfig) -> list[DHTNode]:
    """`count` nodes on 127.0.0.first_index... whose ids share 0 to 5 leading bits with
    `own`, at most 4 per bucket, so that a table around `own` holds every one (a failure of
    a node waiting as a replacement would go unnoticed). Joined through the first."""
    rng = random.Random(first_index)
    nodes: list[DHTNode] = []
    try:
        for index in range(count):
            bootstrap = [f"{nodes[0].address[0]}:{nodes[0].address[1]}"] if nodes else []
            node = DHTNode((loopback_ip(first_index + index), 0), bootstrap=bootstrap,
                           config=config, node_id=random_id_in_bucket(own, index % 6, rng))
            nodes.append(node)
            await node.start()
        async with asyncio.timeout(30):
            await asyncio.gather(*(node.bootstrap(timeout=5) for node in nodes[1:]))
    except BaseException:
        await asyncio.gather(*(node.close() for node in nodes), return_exceptions=True)
        raise
    return nodes


@pytest.mark.network
async def test_2000_lookups_through_a_small_budget_wait_without_failing_any_node():
    """The queue in front of the outbound budget: 2,000 get_peers at once through one node
    whose budget lets 32 queries be in flight and 900 leave per second. Queries wait there
    for many seconds, far past the query timeout, and none of that waiting may count
    against a node: afterwards no query timed out and every node of the network is still
    in the table, good, with no failure, and the lookups found what was announced."""
    own = NodeId(bytes(20))
    # The network's nodes: the per-IP rate of our querier is raised (below), so their
    # inbound limit (5 datagrams a second from an IP they are not waiting on) must be too,
    # or they would drop our queries and those would time out for real.
    responder_config = NodeConfig(query_timeout=2.0, inbound_rate=0.0)
    nodes = await _start_network_around(own, 24, 100, responder_config)
    # The default 3 queries a second per IP would make 2,000 lookups against 24 nodes take
    # about 4 minutes (some 18,000 queries / 72 per second): 60 per IP (1,440 a second in
    # all) keeps the run near 20 s, with the global rate, 900 a second, as the main limit.
    config = NodeConfig(query_rate=900.0, query_burst=50.0, max_pending=32,
                        per_ip_query_rate=60.0, per_ip_query_burst=20.0)
    spec = f"{nodes[0].address[0]}:{nodes[0].address[1]}"
    querier = DHTNode((loopback_ip(130), 0), bootstrap=[spec], config=config, node_id=own)
    try:
        await querier.start()
        async with asyncio.timeout(30):
            await querier.bootstrap(timeout=5)
            await asyncio.gather(*(querier.ping(node.address) for node in nodes))
            rng = random.Random(93)
            hashes = [InfoHash(random_id(rng)) for _ in range(2000)]
            announced = {}
            for index, info_hash in enumerate(hashes[::100]):  # 20 of them
                announcer = nodes[index % len(nodes)]
                await announcer.announce(info_hash, 6000 + index, timeout=10)
                announced[info_hash] = [(announcer.address[0], 6000 + index)]
        table = querier.routing_table
        assert all(table.get(node.address) is not None for node in nodes)
        stats = querier.stats
        delayed_before, sent_before = stats.queries_delayed, stats.queries_sent
        started = time.monotonic()
        pending_seen = []
        async with asyncio.timeout(90):
            results = []
            async for result in querier.get_peers_many(hashes, concurrency=2000, timeout=120):
                results.append(result)
                pending_seen.append(len(querier.engine.transactions.pending))
        elapsed = time.monotonic() - started
        sent = stats.queries_sent - sent_before
        print(f"2000 lookups: {elapsed:.1f} s, {sent} queries, "
              f"{stats.queries_delayed - delayed_before} delayed, {stats.timeouts} timeouts")
        assert len(results) == 2000 and all(r.error is None for r in results)
        assert stats.queries_delayed - delayed_before > 0.8 * sent > 10_000
        assert max(pending_seen) <= 32
        # Some lookups waited longer than a query may take: had waiting counted, they failed.
        assert max(r.summary.elapsed for r in results) > 3 * config.query_timeout
        assert stats.timeouts == 0
        for node in nodes:
            entry = table.get(node.address)
            assert entry is not None, node.address
            assert entry.failures == 0 and entry.state(querier.clock()) is NodeState.GOOD
        for result in results:
            assert result.peers == announced.get(result.info_hash, []), result
    finally:
        await querier.close()
        await asyncio.gather(*(node.close() for node in nodes), return_exceptions=True)


async def test_node_events_come_while_the_quick_path_serves_and_a_slow_reader_loses_the_oldest():
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.5", 0))
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    async with DHTNode(("127.0.0.1", 0), bootstrap=[]) as node:
        def full_path(*args):
            raise AssertionError("an observed plain ping must not leave the quick path")
        node.engine.families[0].handler.handle = full_path

        async def ping(index: int) -> None:
            tid = b"p%d" % index
            query = {b"t": tid, b"y": b"q", b"q": b"ping", b"a": {b"id": bytes([index]) * 20}}
            await loop.sock_sendto(client, encode_bencode(query), node.address)
            async with asyncio.timeout(5):
                while True:  # the node may ping us too, to verify a new querier
                    message = decode_bencode((await loop.sock_recvfrom(client, 2048))[0])
                    if message[b"y"] == b"r" and message[b"t"] == tid:
                        return

        async with node.events(max_queue=10) as stream:
            await ping(1)
            event = await stream.get(timeout=5)
            assert isinstance(event, QueryReceived)
            assert (event.method, event.sender_id, event.source) == (
                "ping", b"\x01" * 20, client.getsockname())
            assert node.engine.observing
            for index in range(2, 42):  # nobody reads meanwhile
                await ping(index)
            assert stream.dropped == 30
            left = [await stream.get(timeout=1) for _ in range(10)]
            assert [e.sender_id[0] for e in left] == list(range(32, 42))
            assert node.stats.events_dropped == 0  # the node handed every one over
        assert not node.engine.observing  # closing the stream unsubscribed it
        assert node.stats.queries_received["ping"] == 41
    client.close()


# --- an application's own traversal, and routers resolved once -------------------------------


async def test_an_applications_own_traversal_runs_with_its_queries_and_stop_rule():
    from mldht.engine import TraversalSpec
    from mldht.krpc import SampleInfohashes

    class SampleSweep(TraversalSpec):
        kind = "sample_sweep"

        def __init__(self, target, enough: int) -> None:
            super().__init__(target)
            self.enough = enough
            self.samples: set[bytes] = set()
            self.askers: list = []

        def query(self, sender_id):
            return SampleInfohashes(transaction_id=b"", sender_id=sender_id, target=self.target)

        def on_response(self, address, response, fresh_peers, now):
            self.askers.append(address)
            blob = response.extra.get(b"samples", b"")
            self.samples.update(blob[i:i + 20] for i in range(0, len(blob), 20))

        def stop(self) -> bool:
            return len(self.samples) >= self.enough

        def result(self, summary):
            return summary, set(self.samples)

    network = await start_network(12, first_index=120)
    try:
        rng = random.Random(44)
        hashes = [InfoHash(random_id(rng)) for _ in range(6)]
        for info_hash in hashes:
            await network.nodes[3].announce(info_hash, 7000, timeout=10)
        seeker = network.nodes[7]
        spec = SampleSweep(random_id(rng), enough=len(hashes))
        summary, samples = await seeker.traverse(spec, timeout=20)
        # The nodes answered BEP 51 queries (its own query went out, not find_node), and
        # the stop rule ended the traversal once every announced infohash had been seen.
        assert samples == set(hashes), (len(samples), summary)
        assert spec.askers and summary.answered >= len(set(spec.askers)) >= 1
        assert sum(n.stats.queries_received.get("sample_infohashes", 0)
                   for n in network.nodes) >= len(set(spec.askers))
        assert [op for op in seeker.status()["operations"] if op["kind"] == "sample_sweep"] == []
        # Without a stop rule that can be met, the same traversal asks more nodes.
        full, _ = await seeker.traverse(SampleSweep(spec.target, enough=10 ** 6), timeout=20)
        assert full.answered > summary.answered, (full.answered, summary.answered)
    finally:
        await network.close()


async def test_router_names_are_resolved_once_not_for_every_lookup(monkeypatch):
    """While the table holds fewer than k nodes every lookup starts from the routers; their
    names are resolved once (the loop's getaddrinfo is patched: no real name is looked up)."""
    network = await start_network(4, first_index=130)  # too small for a table of k
    try:
        entry = network.first.address
        calls: list[str] = []

        async def getaddrinfo(host, port, *args, **kwargs):
            calls.append(host)
            return [(socket.AF_INET, socket.SOCK_DGRAM, 0, "", (entry[0], int(port)))]

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
        async with DHTNode((loopback_ip(140), 0), bootstrap=[f"router.test:{entry[1]}"],
                           read_only=True) as node:
            assert await node.bootstrap(timeout=5) >= 1
            for index in range(5):
                summary = await node.find_node_lookup(random_id(random.Random(index)), timeout=5)
                assert summary.answered >= 1
            assert len(node.routing_table) < K  # every lookup did start from the router
        assert calls == ["router.test"], calls
    finally:
        await network.close()


async def test_a_reply_carries_its_round_trip_time():
    from mldht import Node
    from mldht.krpc import FindNode
    a, b = Node(("127.0.0.1", 0), bootstrap=[]), Node(("127.0.0.2", 0), bootstrap=[])
    await a.start()
    await b.start()
    try:
        response = await a.query(b.address, FindNode(transaction_id=b"", sender_id=a.node_id,
                                                     target=a.node_id))
        assert response.sender_id == b.node_id
        assert response.rtt is not None and 0 <= response.rtt < 1.0
    finally:
        await a.close()
        await b.close()
