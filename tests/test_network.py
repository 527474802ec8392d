"""Thirty in-process nodes on 127.0.0.10 ... 127.0.0.39: joining, lookups, announces,
persistence, and the receive path under garbage and forged replies."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random

import pytest

from dhtnet import (
    BOOTSTRAP_TIMEOUT, NETWORK_SIZE, AsyncRawSocket, DhtNetwork, decode, encode, net, network_config,
)  # noqa: F401 (net: fixture)
from mldht import DHTNode, InfoHash, NodeId
from mldht.ids import common_prefix_bits

pytestmark = [pytest.mark.network, pytest.mark.asyncio(loop_scope="module")]

K = 8
TEST_TIMEOUT = 20.0




def random_id(rng: random.Random) -> bytes:
    return rng.getrandbits(160).to_bytes(20, "big")


# --- (a) joining -------------------------------------------------------------------------


async def test_every_node_joined(net: DhtNetwork):
    assert len(net.nodes) == NETWORK_SIZE
    # One concurrent bootstrap through one node must already give every node a useful table.
    assert all(count >= K for count in net.joined), net.joined
    sizes = [len(node.routing_table) for node in net.nodes]
    assert all(size > 0 for size in sizes), sizes
    # 29 others with random ids: the bootstrap node holds most of them (8 per bucket at most).
    assert sizes[0] >= 12, sizes
    # Every node learnt more than the bootstrap node alone.
    assert min(sizes[1:]) >= K, sizes


# --- (b) announce / get_peers ------------------------------------------------------------


async def test_announced_peer_is_found_from_another_node(net: DhtNetwork):
    info_hash = InfoHash(random_id(random.Random(1)))
    announcer, seeker = net.nodes[3], net.nodes[20]
    async with asyncio.timeout(TEST_TIMEOUT):
        result = await announcer.announce(info_hash, 6881, timeout=10)
        assert result.announced_to, result
        assert result.failed == 0
        assert result.summary.answered > 0
        lookup = seeker.get_peers(info_hash, timeout=10)
        peers = [peer async for peer in lookup]
    assert (announcer.address[0], 6881) in peers
    assert peers == list(dict.fromkeys(peers)), "a peer was yielded twice"
    summary = lookup.summary
    assert summary is not None
    assert summary.target == info_hash
    assert summary.peers >= 1 and summary.peers == len(peers)
    assert summary.answered > 0
    assert summary.queried >= summary.answered
    assert summary.time_to_first_peer is not None
    assert 0 <= summary.time_to_first_peer <= summary.elapsed < 10


async def test_implied_port_stores_the_udp_port(net: DhtNetwork):
    info_hash = InfoHash(random_id(random.Random(2)))
    announcer, seeker = net.nodes[4], net.nodes[25]
    async with asyncio.timeout(TEST_TIMEOUT):
        result = await announcer.announce(info_hash, implied_port=True, timeout=10)
        assert result.announced_to, result
        peers = await seeker.get_peers(info_hash, timeout=10).collect()
    assert peers == [announcer.address], peers


async def test_unannounced_infohash_has_no_peers(net: DhtNetwork):
    seeker = net.nodes[7]
    async with asyncio.timeout(TEST_TIMEOUT):
        lookup = seeker.get_peers(InfoHash(random_id(random.Random(3))), timeout=10)
        peers = [peer async for peer in lookup]
    assert peers == []
    assert lookup.summary.peers == 0 and lookup.summary.time_to_first_peer is None
    assert lookup.summary.answered >= K


async def test_leaving_a_peer_lookup_early_stops_it(net: DhtNetwork):
    info_hash = InfoHash(random_id(random.Random(9)))
    seeker = net.nodes[11]
    async with asyncio.timeout(TEST_TIMEOUT):
        await asyncio.gather(*(net.nodes[i].announce(info_hash, 6000 + i, timeout=10)
                               for i in (1, 2)))
        lookup = seeker.get_peers(info_hash, timeout=10)
        async for peer in lookup:
            assert peer in {("127.0.0.11", 6001), ("127.0.0.12", 6002)}
            break
        await lookup.aclose()
        # The engine no longer runs it: no get_peers operation is left in the status.
        assert [op for op in seeker.status()["operations"] if op["kind"] == "get_peers"] == []
        await asyncio.sleep(0)
    assert seeker.in_flight.get("get_peers", 0) == 0


# --- (d) find_node -----------------------------------------------------------------------


async def test_find_node_returns_the_true_k_closest(net: DhtNetwork):
    rng = random.Random(4)
    async with asyncio.timeout(TEST_TIMEOUT):
        for trial in range(10):
            target = NodeId(random_id(rng))
            asker = net.nodes[(trial * 7 + 1) % NETWORK_SIZE]
            found = [node.id for node in await asker.find_node(target, timeout=10)]
            with_self = net.true_closest(target, K)
            without_self = net.true_closest(target, K, exclude=asker.node_id)
            assert found in (with_self, without_self), (trial, found, without_self)


async def test_find_node_of_an_existing_id_finds_that_node_first(net: DhtNetwork):
    target = net.nodes[17]
    async with asyncio.timeout(TEST_TIMEOUT):
        found = await net.nodes[2].find_node(target.node_id, timeout=10)
    assert found[0].id == target.node_id
    assert found[0].address == target.address


# --- (e) ping ----------------------------------------------------------------------------


async def test_ping_returns_the_remote_id(net: DhtNetwork):
    async with asyncio.timeout(TEST_TIMEOUT):
        for a, b in [(0, 29), (5, 6), (29, 0)]:
            assert await net.nodes[a].ping(net.nodes[b].address) == net.nodes[b].node_id
        spec = f"{net.nodes[12].address[0]}:{net.nodes[12].address[1]}"
        assert await net.nodes[13].ping(spec) == net.nodes[12].node_id


# --- (f) routing-table invariants --------------------------------------------------------


async def test_routing_table_invariants(net: DhtNetwork):
    addresses = {node.node_id: node.address for node in net.nodes}
    for node in net.nodes:
        table = node.routing_table
        buckets = table.buckets
        seen_ips: set[str] = set()
        seen_ids: set[bytes] = set()
        for index, bucket in enumerate(buckets):
            assert len(bucket.nodes) <= bucket.capacity, (node.address, index, len(bucket.nodes))
            last = index == len(buckets) - 1
            assert bucket.capacity == (K if last else table.capacity_at(index))
            for entry in bucket.nodes:
                assert entry.id != node.node_id
                assert entry.ip not in seen_ips, f"{node.address}: two entries for {entry.ip}"
                assert entry.id not in seen_ids
                seen_ips.add(entry.ip)
                seen_ids.add(entry.id)
                prefix = common_prefix_bits(node.node_id, entry.id)
                if index < len(buckets) - 1:
                    assert prefix == index, (node.address, index, prefix)
                else:
                    assert prefix >= index, (node.address, index, prefix)
                # Only real nodes of the network, at their real address.
                assert addresses[entry.id] == entry.address
        assert len(table) == len(seen_ids)


# --- (g) persistence ---------------------------------------------------------------------


async def test_state_file_keeps_the_id_and_the_nodes(net: DhtNetwork, tmp_path):
    state_file = tmp_path / "state.json"
    async with asyncio.timeout(TEST_TIMEOUT):
        node = DHTNode(("127.0.0.40", 0), bootstrap=[net.bootstrap_spec], state_file=str(state_file),
                       config=network_config())
        try:
            await node.start()
            assert await node.bootstrap(timeout=5) > 0
        finally:
            await node.close()
        document = json.loads(state_file.read_text())
        assert document["node_id"] == node.node_id.hex()
        network_ids = {node_id.hex() for node_id in net.ids}
        assert document["nodes"], document
        assert all(item["id"] in network_ids and item["ip"].startswith("127.0.0.")
                   for item in document["nodes"]), document["nodes"]

        # No bootstrap list at all: the saved nodes alone must bring it back into the DHT.
        again = DHTNode(("127.0.0.40", 0), bootstrap=[], state_file=str(state_file),
                        config=network_config())
        try:
            assert again.node_id == node.node_id
            await again.start()
            assert await again.bootstrap(timeout=5) > 0
            assert len(again.routing_table) >= len(document["nodes"]) // 2
        finally:
            await again.close()
    assert json.loads(state_file.read_text())["node_id"] == node.node_id.hex()


# --- (h) garbage on the receive path -----------------------------------------------------


def _malformed_queries(sender_id: bytes) -> list[dict]:
    """Queries (y=q, a string t) that BEP 5 calls protocol errors: each must get error 203."""
    good_id, short_id = sender_id, sender_id[:19]
    ih = bytes(range(20))
    return [
        {b"y": b"q", b"q": b"ping", b"a": {b"id": 12345}},
        {b"y": b"q", b"q": b"ping", b"a": {b"id": short_id}},
        {b"y": b"q", b"q": b"ping", b"a": {b"id": good_id + b"x"}},
        {b"y": b"q", b"q": b"ping", b"a": {}},
        {b"y": b"q", b"q": b"ping"},
        {b"y": b"q", b"q": b"ping", b"a": [good_id]},
        {b"y": b"q", b"q": b"ping", b"a": b"not a dict"},
        {b"y": b"q", b"a": {b"id": good_id}},
        {b"y": b"q", b"q": 7, b"a": {b"id": good_id}},
        {b"y": b"q", b"q": [b"ping"], b"a": {b"id": good_id}},
        {b"y": b"q", b"q": b"find_node", b"a": {b"id": good_id}},
        {b"y": b"q", b"q": b"find_node", b"a": {b"id": good_id, b"target": 5}},
        {b"y": b"q", b"q": b"find_node", b"a": {b"id": good_id, b"target": ih[:10]}},
        {b"y": b"q", b"q": b"get_peers", b"a": {b"id": good_id}},
        {b"y": b"q", b"q": b"get_peers", b"a": {b"id": good_id, b"info_hash": [ih]}},
        {b"y": b"q", b"q": b"get_peers", b"a": {b"id": good_id, b"info_hash": ih + ih}},
        {b"y": b"q", b"q": b"announce_peer", b"a": {b"id": good_id, b"info_hash": ih, b"port": 1}},
        {b"y": b"q", b"q": b"announce_peer",
         b"a": {b"id": good_id, b"info_hash": ih, b"token": b"tok", b"port": b"6881"}},
        {b"y": b"q", b"q": b"announce_peer",
         b"a": {b"id": good_id, b"info_hash": ih, b"token": b"tok", b"port": 70000}},
        {b"y": b"q", b"q": b"announce_peer",
         b"a": {b"id": good_id, b"info_hash": ih, b"token": b"tok"}},
        {b"y": b"q", b"q": b"announce_peer",
         b"a": {b"id": good_id, b"info_hash": 0, b"token": b"tok", b"port": 1}},
        {b"y": b"q", b"q": b"unknown_method", b"a": {b"id": good_id, b"target": b"short"}},
        {b"y": b"q", b"q": b"unknown_method", b"a": {b"id": good_id, b"info_hash": 3}},
    ]


def _valid_messages(sender_id: bytes) -> list[dict]:
    ih = bytes(range(20, 40))
    return [
        {b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": sender_id}},
        {b"t": b"bb", b"y": b"q", b"q": b"find_node", b"a": {b"id": sender_id, b"target": ih}},
        {b"t": b"cc", b"y": b"q", b"q": b"get_peers", b"a": {b"id": sender_id, b"info_hash": ih}},
        {b"t": b"dd", b"y": b"r", b"r": {b"id": sender_id, b"nodes": b"", b"values": [b"\x7f\0\0\1\0\1"]}},
        {b"t": b"ee", b"y": b"e", b"e": [201, b"generic"]},
    ]


def _non_queries(sender_id: bytes) -> list:
    """Malformed datagrams that are not queries: they must never be answered."""
    return [
        {b"y": b"r", b"r": {b"id": 5}},
        {b"y": b"r", b"r": [sender_id]},
        {b"y": b"r"},
        {b"y": b"r", b"r": {b"id": sender_id, b"nodes": b"\0" * 27}},
        {b"y": b"r", b"r": {b"id": sender_id, b"values": [b"\0" * 5]}},
        {b"y": b"r", b"r": {b"id": sender_id, b"values": b"\0" * 6}},
        {b"y": b"r", b"r": {b"id": sender_id, b"token": 5}},
        {b"y": b"r", b"r": {b"id": sender_id}, b"ip": b"\0\0"},
        {b"y": b"e", b"e": b"oops"},
        {b"y": b"e", b"e": []},
        {b"y": b"e", b"e": [b"201", b"x"]},
    ]


def _without_valid_y(sender_id: bytes) -> list[dict]:
    """Dictionaries with a `t` but no valid `y`: not queries (errors.py: `is_query` means
    `y` = `q`), so no reply is due; libtorrent drops them too rather than offer a reflector."""
    return [
        {b"y": b"x", b"q": b"ping", b"a": {b"id": sender_id}},
        {b"q": b"ping", b"a": {b"id": sender_id}},
        {b"y": 1},
        {b"y": b"", b"q": b"ping", b"a": {b"id": sender_id}},
        {b"y": [b"q"], b"q": b"ping", b"a": {b"id": sender_id}},
        {},  # just a transaction id: b"d1:t2:Y5e"
    ]


async def test_garbage_does_not_break_the_receive_path(net: DhtNetwork):
    # Its own node, joined to the network, with the per-IP limit off: all 2000 datagrams come
    # from one address and must all reach the decoder (the limit has tests of its own).
    target = DHTNode(("127.0.0.99", 0), bootstrap=[net.bootstrap_spec],
                     config=dataclasses.replace(network_config(), inbound_rate=0))
    await target.start()
    try:
        await target.bootstrap(timeout=BOOTSTRAP_TIMEOUT)
        await _garbage_to(target, net)
    finally:
        await target.close()


async def _garbage_to(target: DHTNode, net: DhtNetwork) -> None:
    rng = random.Random(5)
    sender_id = random_id(rng)
    stats_before = (target.stats.malformed_received, target.stats.errors_sent)
    raw = AsyncRawSocket("127.0.0.100")
    expect_203: set[bytes] = set()
    expect_silence: set[bytes] = set()
    datagrams: list[bytes] = []
    malformed_sent = 0
    serial = 0

    def tid(prefix: bytes) -> bytes:
        nonlocal serial
        serial += 1
        return prefix + serial.to_bytes(4, "big")

    for _ in range(10):  # structured cases, each with its own transaction id
        for message in _malformed_queries(sender_id):
            t = tid(b"Q")
            expect_203.add(t)
            datagrams.append(encode({**message, b"t": t}))
            malformed_sent += 1
        for message in _non_queries(sender_id):
            t = tid(b"N")
            expect_silence.add(t)
            datagrams.append(encode({**message, b"t": t}))
            malformed_sent += 1
        # A query whose t is not a string, and one whose t is too long: nothing to reply to.
        datagrams.append(encode({b"t": 17, b"y": b"q", b"q": b"ping", b"a": {b"id": 1}}))
        datagrams.append(encode({b"t": b"T" * 1000, b"y": b"q", b"q": b"ping", b"a": {b"id": 1}}))
        datagrams.append(encode([b"t", b"aa", b"y", b"q"]))
        datagrams.append(encode(42))
        malformed_sent += 4
    valid = [encode(message) for message in _valid_messages(sender_id)]
    while len(datagrams) < 2000:
        kind = rng.random()
        if kind < 0.3:
            datagrams.append(rng.randbytes(rng.randint(0, 300)))
        elif kind < 0.6:
            message = rng.choice(valid)
            datagrams.append(message[:rng.randint(0, len(message) - 1)])  # truncated: never valid
            malformed_sent += 1
        elif kind < 0.9:
            message = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 4)):
                message[rng.randrange(len(message))] = rng.randrange(256)
            datagrams.append(bytes(message))
        else:
            datagrams.append(b"d" * rng.randint(1, 2000))  # deep nesting, never closed
            malformed_sent += 1
    rng.shuffle(datagrams)

    replies: dict[bytes, list] = {}
    unexpected: list = []

    async def drain(timeout: float) -> None:
        while (received := await raw.recv(timeout)) is not None:
            data, source = received
            assert source == target.address
            message = decode(data)
            if isinstance(message, dict) and isinstance(message.get(b"t"), bytes):
                replies.setdefault(message[b"t"], []).append(message)
            else:
                unexpected.append(data)
            timeout = min(timeout, 0.05)

    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            for start in range(0, len(datagrams), 50):
                for data in datagrams[start:start + 50]:
                    await raw.send(data, target.address)
                await asyncio.sleep(0)
                await drain(0.01)
            deadline = asyncio.get_running_loop().time() + 5
            while not expect_203 <= replies.keys() and asyncio.get_running_loop().time() < deadline:
                await drain(0.2)
            await drain(0.2)

            assert target.stats.receive_path_failures == 0
            assert target.stats.malformed_received - stats_before[0] >= malformed_sent
            missing = expect_203 - replies.keys()
            assert not missing, f"{len(missing)} malformed queries got no error reply"
            for t in expect_203:
                assert len(replies[t]) == 1
                reply = replies[t][0]
                assert reply[b"y"] == b"e", reply
                assert isinstance(reply[b"e"], list) and reply[b"e"][0] == 203, reply
                assert isinstance(reply[b"e"][1], bytes)
            assert target.stats.errors_sent - stats_before[1] >= len(expect_203)
            answered_silent = expect_silence & replies.keys()
            assert not answered_silent, f"non-queries answered: {sorted(answered_silent)[:5]}"
            assert unexpected == []
            # Still healthy: answers pings and lookups.
            assert await net.nodes[0].ping(target.address) == target.node_id
            found = await target.find_node(net.nodes[1].node_id, timeout=10)
            assert found and found[0].id == net.nodes[1].node_id
    finally:
        raw.close()


async def test_message_without_valid_y_is_not_answered(net: DhtNetwork):
    target = net.nodes[28]
    raw = AsyncRawSocket("127.0.0.103")
    sender_id = random_id(random.Random(8))
    errors_before = target.stats.errors_sent
    answered = []
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            for number, message in enumerate(_without_valid_y(sender_id)):
                await raw.send(encode({**message, b"t": b"Y%d" % number}), target.address)
            # Control: a well-formed ping on the same socket is answered, and after it nothing.
            await raw.send(encode({b"t": b"ok", b"y": b"q", b"q": b"ping", b"a": {b"id": sender_id}}),
                           target.address)
            control = []
            while (received := await raw.recv(0.5)) is not None:
                reply = decode(received[0])
                if reply.get(b"y") == b"q":
                    continue  # the node checking us out (it pings new queriers)
                (control if reply.get(b"t") == b"ok" else answered).append(reply)
            assert target.stats.receive_path_failures == 0
    finally:
        raw.close()
    assert len(control) == 1 and control[0][b"y"] == b"r"
    # libtorrent (node::incoming) drops these: "don't respond to this obviously broken
    # messages. We don't want to open up a magnification opportunity". Here an 8-byte
    # datagram such as b"d1:t1:xe" draws a reply of about 60 bytes.
    assert answered == [], f"{len(answered)} datagrams without a valid 'y' were answered: {answered}"
    assert target.stats.errors_sent == errors_before


# --- (i) forged and unmatched replies ----------------------------------------------------


async def test_reply_from_another_address_is_not_accepted(net: DhtNetwork):
    asker = net.nodes[2]
    queried = AsyncRawSocket("127.0.0.101")
    forger = AsyncRawSocket("127.0.0.102")
    same_ip_forger = AsyncRawSocket("127.0.0.101")
    real_id = random_id(random.Random(6))
    forged_id = random_id(random.Random(7))
    before = (asker.stats.unmatched_received, asker.stats.responses_received)
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            ping = asyncio.create_task(asker.ping(queried.address, timeout=5))
            received = await queried.recv(3)
            assert received is not None, "the ping never arrived"
            query = decode(received[0])
            assert received[1] == asker.address and query[b"q"] == b"ping"
            tid = query[b"t"]
            forged = encode({b"t": tid, b"y": b"r", b"r": {b"id": forged_id}})
            await forger.send(forged, asker.address)
            await same_ip_forger.send(forged, asker.address)  # same IP, other port
            await queried.send(encode({b"t": tid + b"x", b"y": b"r", b"r": {b"id": forged_id}}),
                               asker.address)  # right address, unknown transaction
            await asyncio.sleep(0.3)
            assert not ping.done(), "a reply from the wrong address (or tid) was accepted"
            assert asker.stats.unmatched_received - before[0] == 3
            assert asker.stats.responses_received == before[1]
            assert all(entry.id != forged_id for entry in asker.routing_table)

            await queried.send(encode({b"t": tid, b"y": b"r", b"r": {b"id": real_id}}), asker.address)
            assert await ping == real_id
            assert asker.stats.responses_received == before[1] + 1
            # The same reply again is a duplicate: unmatched, not a second response.
            await queried.send(encode({b"t": tid, b"y": b"r", b"r": {b"id": real_id}}), asker.address)
            await asyncio.sleep(0.2)
            assert asker.stats.unmatched_received - before[0] == 4
            assert asker.stats.receive_path_failures == 0
    finally:
        # The fake node answered once and entered the table: take it out again so that it
        # is not handed to other nodes.
        asker.routing_table.remove(queried.address)
        for sock in (queried, forger, same_ip_forger):
            sock.close()
