"""BEP 51 sample_infohashes: the codec, the sampler, a live node and `mldht sample`."""

from __future__ import annotations

import json
import random

import pytest

from dhtnet import run_cli
from mldht import DHTNode, InfoHash, NodeId
from mldht.bep51 import MAX_SAMPLES, SAMPLE_INTERVAL, InvalidSample, Sample, Sampler
from mldht.krpc import Response, SampleInfohashes, decode_message, encode_message

ID = NodeId(b"\x01" * 20)


def test_query_round_trip_and_target_required():
    query = SampleInfohashes(transaction_id=b"aa", sender_id=ID, target=NodeId(b"\x02" * 20))
    data = encode_message(query)
    assert data == (b"d1:ad2:id20:" + b"\x01" * 20 + b"6:target20:" + b"\x02" * 20
                    + b"e1:q17:sample_infohashes1:t2:aa1:y1:qe")
    assert decode_message(data) == query
    with pytest.raises(Exception, match="target"):
        decode_message(b"d1:ad2:id20:" + b"\x01" * 20 + b"e1:q17:sample_infohashes1:t2:aa1:y1:qe")


def test_sample_from_response_validates():
    good = Response(transaction_id=b"aa", sender_id=ID, nodes=[],
                    extra={b"samples": b"A" * 40, b"num": 7, b"interval": 60})
    sample = Sample.from_response(good)
    assert sample.samples == [InfoHash(b"A" * 20)] * 2 and sample.num == 7 and sample.interval == 60
    for bad in ({b"samples": b"A" * 21, b"num": 1, b"interval": 0},
                {b"samples": b"", b"num": -1, b"interval": 0},
                {b"samples": b"", b"num": 0, b"interval": 21601},
                {b"num": 0, b"interval": 0}):  # a find_node-like answer: no BEP 51
        with pytest.raises(InvalidSample):
            Sample.from_response(Response(transaction_id=b"aa", sender_id=ID, extra=bad))


def test_sampler_returns_everything_when_it_fits_and_a_held_subset_otherwise():
    stored = [bytes([i]) * 20 for i in range(5)]
    sampler = Sampler(lambda: stored, random.Random(1))
    assert sampler.sample(0.0) == (stored, 5, 0)
    stored = [i.to_bytes(20, "big") for i in range(100)]
    sampler = Sampler(lambda: stored, random.Random(1))
    first, num, interval = sampler.sample(0.0)
    assert len(first) == MAX_SAMPLES and num == 100 and interval == SAMPLE_INTERVAL
    again, _, left = sampler.sample(3600.0)
    assert again == first and left == SAMPLE_INTERVAL - 3600  # held for the interval
    fresh, _, _ = sampler.sample(SAMPLE_INTERVAL + 1.0)
    assert fresh != first and set(fresh) <= set(stored)


@pytest.mark.network
async def test_a_node_serves_and_queries_samples():
    async with DHTNode(("127.0.0.190", 0), bootstrap=[]) as server, \
            DHTNode(("127.0.0.191", 0), bootstrap=[]) as client:
        now = server.clock()
        hashes = [InfoHash(bytes([i]) * 20) for i in range(3)]
        for info_hash in hashes:
            server.peer_store.announce(info_hash, ("10.0.0.1", 1), now)
        await client.ping(server.address)  # so that the server knows a node to return
        await server.ping(client.address)
        sample = await client.sample_infohashes(server.address, target=NodeId(b"\x00" * 20))
        assert sorted(sample.samples) == sorted(hashes)
        assert sample.num == 3 and sample.interval == 0
        assert [n.address for n in sample.nodes] == []  # only the client itself: left out
        assert server.stats.queries_received["sample_infohashes"] == 1


@pytest.mark.network
async def test_sample_command(tmp_path):
    async with DHTNode(("127.0.0.192", 0), bootstrap=[]) as server:
        server.peer_store.announce(InfoHash(b"\x07" * 20), ("10.0.0.1", 1), server.clock())
        address = f"{server.address[0]}:{server.address[1]}"
        result = await run_cli("sample", address, "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report == {"samples": ["07" * 20], "num": 1, "interval": 0, "nodes": []}
        plain = await run_cli("sample", address)
        assert plain.stdout.split() == ["07" * 20]
        assert "1 samples of 1 stored infohashes" in plain.stderr
        silent = await run_cli("sample", "127.0.0.193:9", "--timeout", "0.5")
        assert silent.returncode == 1 and silent.stderr.startswith("mldht: ")
