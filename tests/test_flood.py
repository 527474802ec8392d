"""Abuse limits on a live node: a flooding IP is throttled while others are served, blocked
IPs are ignored both ways, and the reply budget caps what a node sends."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from dhtnet import AsyncRawSocket, decode, encode
from netguard import guarded_env
from mldht import DHTNode, InfoHash, NodeConfig, QueryNotSent, QueryTimeout
from mldht.blocklist import Blocklist
from mldht.krpc import GetPeers

pytestmark = pytest.mark.network

FLOOD_RATE = 10_000  # queries per second
FLOOD_SECONDS = 2.0
FLOOD_TOOL = Path(__file__).resolve().parents[1] / "tools" / "flood.py"


def ping(tid: bytes) -> bytes:
    return encode({b"t": tid, b"y": b"q", b"q": b"ping", b"a": {b"id": b"F" * 20}})


async def test_a_flooding_ip_is_throttled_while_another_is_served():
    """10,000 pings per second from one IP (a second process, tools/flood.py) for 2 s, while
    another IP pings the node and asks it get_peers."""
    async with DHTNode(("127.0.0.150", 0), bootstrap=[]) as target, \
            DHTNode(("127.0.0.152", 0), bootstrap=[]) as client:
        flood = await asyncio.create_subprocess_exec(
            sys.executable, str(FLOOD_TOOL), "--source", "127.0.0.151",
            "--target", f"{target.address[0]}:{target.address[1]}", "--rate", str(FLOOD_RATE),
            "--seconds", str(FLOOD_SECONDS), stdout=asyncio.subprocess.PIPE, env=guarded_env())
        await asyncio.sleep(0.3)  # the flood is on
        times = []
        for _ in range(20):
            started = time.monotonic()
            await client.ping(target.address, timeout=2)
            await client.query(target.address, GetPeers(
                transaction_id=b"", sender_id=client.node_id,
                info_hash=InfoHash(os.urandom(20))), timeout=2)
            times.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
        async with asyncio.timeout(30):
            out, _ = await flood.communicate()
    result = json.loads(out)
    assert result["sent"] >= FLOOD_RATE * FLOOD_SECONDS * 0.5, result  # the flood happened
    config = NodeConfig()
    allowed = config.inbound_burst + config.inbound_rate * (result["seconds"] + 1)
    assert result["answers"] <= allowed, result
    assert target.stats.rate_limited >= result["sent"] * 0.5, target.stats
    assert len(times) == 20 and max(times) < 2.0  # every query of the other IP answered


async def test_replies_to_our_own_queries_are_never_limited():
    # Our outbound per-IP cap would spread the 40 pings over 10 s: off, this is about inbound.
    config = NodeConfig(inbound_rate=1, inbound_burst=1, per_ip_query_rate=0)
    async with DHTNode(("127.0.0.153", 0), bootstrap=[], config=config) as asker, \
            DHTNode(("127.0.0.154", 0), bootstrap=[]) as answerer:
        results = await asyncio.gather(*(asker.ping(answerer.address, timeout=2)
                                         for _ in range(40)))
    assert len(results) == 40 and asker.stats.rate_limited == 0


async def test_blocklisted_ips_are_ignored_both_ways():
    blocklist = Blocklist.from_lines(["127.0.0.156/32"])
    async with DHTNode(("127.0.0.155", 0), bootstrap=[], blocklist=blocklist) as guarded, \
            DHTNode(("127.0.0.156", 0), bootstrap=[]) as blocked, \
            DHTNode(("127.0.0.157", 0), bootstrap=[]) as other:
        with pytest.raises(QueryTimeout):
            await blocked.ping(guarded.address, timeout=0.5)
        with pytest.raises(QueryNotSent, match="blocklisted"):
            await guarded.ping(blocked.address, timeout=0.5)
        assert await other.ping(guarded.address, timeout=2) == guarded.node_id
    assert guarded.stats.blocked >= 1
    assert blocked.stats.datagrams_received == 0  # nothing was sent to it


async def test_the_reply_budget_caps_bytes_sent():
    budget = 2000  # bytes per second: a few dozen ping replies
    config = NodeConfig(reply_bytes_per_second=budget, inbound_rate=0)
    async with DHTNode(("127.0.0.158", 0), bootstrap=[], config=config) as target:
        raw = AsyncRawSocket("127.0.0.159")
        try:
            for i in range(500):
                await raw.send(ping(i.to_bytes(4, "big")), target.address)
            replies = 0
            while (received := await raw.recv(0.3)) is not None:
                message = decode(received[0])
                replies += isinstance(message, dict) and message.get(b"y") == b"r"
        finally:
            raw.close()
    assert target.stats.bytes_sent <= budget * 2 + 200
    received = target.stats.queries_received["ping"]  # the kernel may drop some of the 500
    assert received >= 200 and replies < 60
    assert replies + target.stats.replies_dropped == received
