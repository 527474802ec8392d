"""Captured packets of real implementations (fixtures/*.pcap), replayed against mldht.

For every capture: each reply decodes to the typed message its query calls for, mldht's own
encoding of each message is canonical bencode with the same content, and each captured query
sent to a fresh mldht node gets a valid reply or the error BEP 5 requires.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netguard import guarded_env
from mldht import DHTNode, InfoHash, NodeConfig, NodeId
from mldht.capture import Datagram, read_datagrams
from mldht.krpc import AnnouncePeer, Error, FindNode, GetPeers, Ping, Response
from mldht.replay import (
    CapturedMessage, analyze, decode_datagram, describe, encoding_problem, replay, reply_problem,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CAPTURES = sorted(FIXTURES.glob("*.pcap"))
IMPLEMENTATIONS = {"libtorrent.pcap", "webtorrent.pcap", "aria2.pcap", "transmission.pcap"}


def test_every_implementation_has_a_capture():
    assert IMPLEMENTATIONS <= {path.name for path in CAPTURES}, CAPTURES


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_capture_replies_decode_and_fit_their_queries(capture):
    analysis = analyze(read_datagrams(capture))
    assert len(analysis.messages) >= 50
    assert analysis.reply_problems == []
    assert analysis.unpaired_replies == 0
    # Only queries may fail to decode (the malformed ones the probes sent on purpose).
    for captured in analysis.undecodable:
        assert captured.declared_query or captured.transaction_id is None, captured.problem
    methods = analysis.methods()
    for method in ("ping", "find_node", "get_peers", "announce_peer"):
        assert methods.get(method), methods
    kinds = analysis.counts()
    assert kinds.get("Response") and kinds.get("Error"), kinds


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_mldht_reencodes_every_message_canonically(capture):
    analysis = analyze(read_datagrams(capture))
    assert analysis.encoding_problems == []
    checked = sum(m.message is not None for m in analysis.messages)
    assert checked >= 50


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
async def test_every_captured_query_gets_a_valid_reply_from_mldht(capture):
    analysis = analyze(read_datagrams(capture))
    unlimited = NodeConfig(inbound_rate=0)  # every replayed query comes from one socket
    async with DHTNode(("127.0.0.1", 0), bootstrap=[], config=unlimited) as node:
        results = await replay(analysis.exchanges, node.address, timeout=2.0, rate=0)
    assert len(results) == len(analysis.exchanges) >= 20
    problems = [(r.exchange.query.method, r.problem) for r in results if r.problem]
    assert problems == []
    malformed = [r for r in results if r.exchange.query.message is None]
    assert all(isinstance(r.reply, Error) and r.reply.code == 203 for r in malformed)
    announces = [r for r in results if isinstance(r.exchange.query.message, AnnouncePeer)]
    assert announces and all(isinstance(r.reply, Error) and r.reply.code == 203 for r in announces)


# --- the checks themselves ----------------------------------------------------------------


def captured(message_bytes: bytes) -> CapturedMessage:
    return decode_datagram(0, Datagram(0.0, ("198.18.1.1", 1), ("198.18.2.1", 2), message_bytes))


NODE_A = b"A" * 20


def query(method: bytes, args: bytes = b"") -> CapturedMessage:
    body = b"d2:id20:" + NODE_A + args + b"e"
    return captured(b"d1:a" + body + b"1:q" + str(len(method)).encode() + b":" + method
                    + b"1:t2:aa1:y1:qe")


def response(**fields) -> Response:
    return Response(transaction_id=b"aa", sender_id=NodeId(NODE_A), **fields)


def test_reply_problem_per_method():
    find = query(b"find_node", b"6:target20:" + b"T" * 20)
    assert isinstance(find.message, FindNode)
    assert reply_problem(find, response()) == "find_node reply without nodes or nodes6"
    assert reply_problem(find, response(nodes=[])) is None
    get = query(b"get_peers", b"9:info_hash20:" + b"I" * 20)
    assert isinstance(get.message, GetPeers)
    assert reply_problem(get, response(nodes=[])) == "get_peers reply without a token"
    assert reply_problem(get, response(token=b"x")) == "get_peers reply without values or nodes"
    assert reply_problem(get, response(token=b"x", values=[("1.2.3.4", 5)])) is None
    ping = query(b"ping")
    assert isinstance(ping.message, Ping)
    error = Error(transaction_id=b"aa", code=205, message="too big")
    assert "not one of" in reply_problem(ping, error)
    assert reply_problem(ping, None) == "no reply"


def test_reply_problem_for_tokens_and_malformed_queries():
    announce = query(b"announce_peer", b"9:info_hash20:" + b"I" * 20 + b"4:porti80e5:token2:tk")
    assert isinstance(announce.message, AnnouncePeer)
    assert reply_problem(announce, response(), foreign_token=True) is not None
    assert reply_problem(announce, response()) is None
    bad_token = Error(transaction_id=b"aa", code=203, message="bad token")
    assert reply_problem(announce, bad_token, foreign_token=True) is None
    malformed = query(b"get_peers")  # no info_hash
    assert malformed.message is None and malformed.declared_query
    assert reply_problem(malformed, bad_token) is None
    assert "not e203" in reply_problem(malformed, response())
    assert describe(bad_token) == "e203"
    assert describe(response(nodes=[], token=b"t")) == "r{id,nodes,token}"


def test_encoding_problem_reports_lost_content():
    # A non-canonical datagram (keys out of order) still re-encodes with the same content.
    shuffled = captured(b"d1:y1:q1:t2:aa1:q4:ping1:ad2:id20:" + NODE_A + b"ee")
    assert encoding_problem(shuffled) is None
    # Keys mldht does not model (BEP 33 `scrape`) are not compared; the others must survive.
    with_extra = query(b"get_peers", b"9:info_hash20:" + b"I" * 20 + b"6:scrapei1e")
    assert encoding_problem(with_extra) is None


def test_pairing_needs_the_same_two_addresses():
    ask = Datagram(0.0, ("198.18.1.1", 1), ("198.18.2.1", 2),
                   b"d1:ad2:id20:" + NODE_A + b"e1:q4:ping1:t2:aa1:y1:qe")
    answer = b"d1:rd2:id20:" + NODE_A + b"e1:t2:aa1:y1:re"
    right = Datagram(0.1, ("198.18.2.1", 2), ("198.18.1.1", 1), answer)
    stranger = Datagram(0.1, ("198.18.3.1", 2), ("198.18.1.1", 1), answer)
    analysis = analyze([ask, stranger, right])
    assert analysis.unpaired_replies == 1
    assert analysis.exchanges[0].reply.index == 2


# --- the command ----------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mldht", *args], capture_output=True, text=True,
                          timeout=120, env=guarded_env())


def test_replay_command_reports_in_json():
    capture = CAPTURES[0]
    process = run_cli("replay", str(capture), "--rate", "1000", "--json")
    assert process.returncode == 0, process.stderr
    report = json.loads(process.stdout)
    assert report["replayed"] == report["answered"] > 0
    assert report["problems"] == [] and report["capture_reply_problems"] == []
    assert report["target"].startswith("127.0.0.1:")


def test_replay_command_finds_differences_against_a_target():
    capture = CAPTURES[0]
    process = run_cli("replay", str(capture), "--rate", "1000", "--limit", "30")
    assert process.returncode == 0, process.stderr
    assert "replayed 30 queries" in process.stdout
    assert "difference:" in process.stdout  # at least the announces (tokens are per node)


def test_replay_command_rejects_a_bad_file(tmp_path):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(os.urandom(64))
    process = run_cli("replay", str(junk))
    assert process.returncode == 2
    assert process.stderr.strip().count("\n") == 0 and "not a pcap" in process.stderr


async def test_replayed_get_peers_brings_the_target_s_values():
    async with DHTNode(("127.0.0.1", 0), bootstrap=[]) as node:
        info_hash = InfoHash(b"I" * 20)
        node.peer_store.announce(info_hash, ("198.18.9.9", 99), node.clock())
        get = query(b"get_peers", b"9:info_hash20:" + bytes(info_hash))
        analysis = analyze([get.datagram])
        [result] = await replay(analysis.exchanges, node.address, rate=0)
    assert isinstance(result.reply, Response) and result.problem is None
    assert result.reply.values == [("198.18.9.9", 99)]
    assert result.difference is None  # no captured reply to compare with
