"""BEP 33 bloom filters: the spec's test vector, unions and the estimate."""

from __future__ import annotations

import asyncio
import ipaddress
import json

import pytest

from dhtnet import DhtNetwork, net, run_cli  # noqa: F401 (net: fixture)
from mldht import InfoHash
from mldht.bep33 import BloomFilter, ScrapeMerger
from mldht.krpc import GetPeers

VECTOR = """
F6C3F5EA A07FFD91 BDE89F77 7F26FB2B FF37BDB8 FB2BBAA2 FD3DDDE7 BACFFF75 EE7CCBAE
FE5EEDB1 FBFAFF67 F6ABFF5E 43DDBCA3 FD9B9FFD F4FFD3E9 DFF12D1B DF59DB53 DBE9FA5B
7FF3B8FD FCDE1AFB 8BEDD7BE 2F3EE71E BBBFE93B CDEEFE14 8246C2BC 5DBFF7E7 EFDCF24F
D8DC7ADF FD8FFFDF DDFFF7A4 BBEEDF5C B95CE81F C7FCFF1F F4FFFFDF E5F7FDCB B7FD79B3
FA1FC77B FE07FFF9 05B7B7FF C7FEFEFF E0B8370B B0CD3F5B 7F2BD93F EB4386CF DD6F7FD5
BFAF2E9E BFFFFEEC D67ADBF7 C67F17EF D5D75EBA 6FFEBA7F FF47A91E B1BFBB53 E8ABFB57
62ABE8FF 237279BF EFBFEEF5 FFC5FEBF DFE5ADFF ADFEE1FB 737FFFFB FD9F6AEF FEEE76B6
FD8F72EF
"""


def spec_addresses() -> list[str]:
    v4 = [f"192.0.2.{i}" for i in range(256)]
    base = int(ipaddress.IPv6Address("2001:db8::"))
    v6 = [str(ipaddress.IPv6Address(base + i)) for i in range(0x3E8)]
    return v4 + v6


def test_bep33_test_vector():
    bloom = BloomFilter.of(spec_addresses())
    assert bytes(bloom) == bytes.fromhex("".join(VECTOR.split()))
    assert abs(bloom.estimate() - 1224.9308) < 0.001  # the BEP truncates to 4 decimals


def test_union_estimates_distinct_addresses():
    first = BloomFilter.of(f"10.0.{i // 250}.{i % 250}" for i in range(300))
    second = BloomFilter.of(f"10.0.{i // 250}.{i % 250}" for i in range(200, 500))
    merger = ScrapeMerger()
    assert merger.add({b"BFsd": bytes(BloomFilter()), b"BFpe": bytes(first)})
    assert merger.add({b"BFsd": bytes(BloomFilter()), b"BFpe": bytes(second)})
    assert not merger.add({b"BFsd": b"short", b"BFpe": bytes(first)})
    assert not merger.add({})
    estimate = merger.estimate()
    assert estimate.filters == 2 and estimate.seeds == 0
    assert 480 <= estimate.peers <= 520  # 500 distinct, counted once though two filters hold them
    assert all(f"10.0.{i // 250}.{i % 250}" in first for i in range(300))


def test_filter_size_is_checked():
    with pytest.raises(ValueError):
        BloomFilter(b"\x00" * 255)


# --- on the wire ---------------------------------------------------------------------------


@pytest.mark.network
@pytest.mark.asyncio(loop_scope="module")  # the shared network lives in the module's loop
async def test_scrape_estimates_seeds_and_peers_across_the_network(net: DhtNetwork):
    info_hash = InfoHash(b"\x33" * 20)
    # 6 seeds and 9 leechers, each from its own node (its own IP).
    await asyncio.gather(*(net.nodes[i].announce(info_hash, 6000 + i, seed=i < 7, timeout=10)
                           for i in range(1, 16)))
    lookup = net.nodes[20].get_peers(info_hash, timeout=10, scrape=True)
    peers = await lookup.collect()
    estimate = lookup.summary.scrape
    assert len(peers) == 15
    assert estimate.filters >= 1
    assert 5 <= estimate.seeds <= 7.5 and 8 <= estimate.peers <= 10.5, estimate
    # A node answers scrape only with stored entries; noseed puts leechers first.
    holder = next(n for n in net.nodes if info_hash in n.peer_store)
    reply = await net.nodes[21].query(holder.address, GetPeers(
        transaction_id=b"", sender_id=net.nodes[21].node_id, info_hash=info_hash, scrape=True,
        noseed=True))
    assert len(reply.extra[b"BFsd"]) == 256 and len(reply.extra[b"BFpe"]) == 256
    result = await run_cli("get-peers", info_hash.hex(), "--scrape", "--json",
                           "--bootstrap", net.bootstrap_spec, "--timeout", "10")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["scrape"]["filters"] >= 1 and 5 <= summary["scrape"]["seeds"] <= 7.5

