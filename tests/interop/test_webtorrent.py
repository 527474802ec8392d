"""Interop with WebTorrent's bittorrent-dht 11 (npm), in the lab namespace.

One scenario run (scenario_webtorrent.py "all", about 12 s) feeds every test: a
bittorrent-dht node joins through one mldht node, peers announced on either side are found
on the other (the mldht command line, DHTNode.get_peers, bittorrent-dht's lookup), and
mldht's single queries get bittorrent-dht's real replies and errors; the whole run is
captured to a pcap.

Needs Node.js and `npm ci --prefix tests/interop/js` (a missing install FAILS the tests).
"""

from __future__ import annotations

import pytest

import lab
import webtorrent

pytestmark = pytest.mark.lab("webtorrent")

PROBE_IP = lab.lab_ip(5)
W1 = f"{lab.lab_ip(11)}:6881"
W2 = f"{lab.lab_ip(12)}:6881"
MLDHT_CORE = {"mldht-A", "mldht-B", "mldht-C"}


@pytest.fixture(scope="module")
def scenario(lab_runs) -> dict:
    try:
        webtorrent.check_installed()
    except webtorrent.WebTorrentMissing as exc:
        return lab_runs.outcome("webtorrent", str(exc))
    return lab_runs.outcome("webtorrent")


_checked = lab.checked


def test_versions_and_run_time(scenario):
    report = _checked(scenario)
    assert report["bittorrent_dht_version"] == "11.0.12", report["bittorrent_dht_version"]
    assert report["wall_seconds"] < 60, report["wall_seconds"]
    assert report["wtnode_unsolicited"] == []  # no uncaught exception in wtnode.js


def test_webtorrent_bootstrapped_from_one_mldht_node_keeps_it(scenario):
    report = _checked(scenario)
    join = report["join"]
    assert join["ready"], join
    assert join["has_bootstrap_node"] and join["bootstrap_node_id_matches"], join
    # Through A it met the rest of the mldht core (it only adds nodes that answered it).
    assert MLDHT_CORE <= set(join["table"]), join
    assert join["mldht_A_verified_w1"], join  # mldht pinged it back and it answered
    for node, table in join["mldht_tables_with_webtorrent"].items():
        assert set(table) == {"wt-1", "wt-2"}, (node, join)
    assert join["add_node_by_ping"]["added"], join  # addNode without an id pings first


def test_webtorrent_announce_found_by_mldht_cli(scenario):
    report = _checked(scenario)
    found = report["wt_to_ml"]
    for node in MLDHT_CORE:  # the announce reached every mldht node, with its TCP port
        assert found["stored_on_mldht"].get(node) == [found["expected_peer"]], found
    cli = found["cli"]
    assert cli["exit"] == 0 and cli["found"], cli
    assert cli["peers"] == [found["expected_peer"]], cli
    # The command no longer joins first: its lookup starts from A's answer and may also ask
    # contacts that do not answer it (the lab's probe and lookup nodes, BEP 43 read-only
    # nodes); what matters is that the mldht core answered and the one peer was found.
    assert cli["summary"]["peers"] == 1, cli
    assert cli["summary"]["answered"] >= len(MLDHT_CORE), cli
    assert cli["summary"]["time_to_first_peer"] is not None, cli


def test_webtorrent_announce_found_by_library(scenario):
    report = _checked(scenario)
    library = report["wt_to_ml"]["library"]
    assert library["found"], library
    assert library["peers"] == [report["wt_to_ml"]["expected_peer"]], library
    assert library["time_to_first_peer_s"] is not None and library["timed_out"] == 0, library
    # mldht decoded `values` from a bittorrent-dht reply too (w1 stored the announce).
    assert "wt-1" in library["values_from_webtorrent_nodes"], library


def test_webtorrent_implied_port_announce_stored_by_mldht(scenario):
    report = _checked(scenario)
    implied = report["wt_to_ml"]["implied_port_announce"]  # port=0, implied_port=1 on the wire
    assert implied["stored_on_mldht"], implied
    for node, peers in implied["stored_on_mldht"].items():
        assert peers == [implied["expected_peer"]], (node, implied)
    announces = report["wire"]["announce_peer"]
    assert any(a["implied_port"] == 1 and a["port"] == 0 for a in announces), announces
    assert any(a["implied_port"] == 0 and a["port"] == 51413 for a in announces), announces


def test_mldht_announce_found_by_webtorrent(scenario):
    report = _checked(scenario)
    found = report["ml_to_wt"]
    assert found["mldht_announce"]["failed"] == 0, found
    assert {"wt-1", "wt-2"} <= set(found["mldht_announce"]["announced_to"]), found
    assert found["stored_on_webtorrent"] == {"w1": [found["expected_peer"]],
                                             "w2": [found["expected_peer"]]}, found
    assert found["found"] and found["found_ms"] is not None, found
    # Not only from its own store: bittorrent-dht parsed `values` from mldht replies.
    assert found["found_in_mldht_replies"], found


def test_mldht_probes_get_typed_replies(scenario):
    report = _checked(scenario)
    probes = report["probes"]
    w1_id = probes["ping"]["sender_id"]
    for name in ("ping", "find_node", "get_peers_without_peers", "get_peers_with_peers",
                 "announce_peer_good_token", "bep44_get"):
        assert probes[name]["type"] == "Response", (name, probes[name])
        assert probes[name]["sender_id"] == w1_id, (name, probes[name])
    assert report["quirks"]["ping_sender_id_matches"], report["quirks"]
    assert probes["ping"]["keys"] == ["id"]
    assert probes["find_node"]["nodes"] > 0, probes["find_node"]
    # A hash without peers: nodes and a token; with peers: values and a token (no nodes).
    assert probes["get_peers_without_peers"]["keys"] == ["id", "nodes", "token"]
    assert probes["get_peers_without_peers"]["values"] is None
    assert probes["get_peers_with_peers"]["keys"] == ["id", "token", "values"]
    assert probes["get_peers_with_peers"]["values"] == [f"{PROBE_IP}:40000"]
    assert probes["get_peers_after_implied_port"]["values"] == [f"{PROBE_IP}:6881"]


def test_mldht_probes_get_webtorrent_errors(scenario):
    report = _checked(scenario)
    probes = report["probes"]
    assert probes["announce_peer_bad_token"] == {
        "type": "RemoteError", "code": 203, "message": "cannot `announce_peer` with bad token",
        "ms": probes["announce_peer_bad_token"]["ms"]}
    assert probes["find_node_without_target"]["type"] == "RemoteError"
    assert probes["find_node_without_target"]["code"] == 203
    assert probes["get_peers_without_info_hash"]["type"] == "RemoteError"
    assert probes["get_peers_without_info_hash"]["code"] == 203
    # bittorrent-dht drops unknown methods (no 204), even with a target or an info_hash,
    # and an announce_peer with port 0: mldht sees a timeout.
    for name in ("unknown_method", "unknown_method_with_target", "unknown_method_with_info_hash",
                 "announce_peer_port_0"):
        assert probes[name]["type"] == "QueryTimeout", (name, probes[name])
    # They did reach it (counted by wtnode.js), so the silence is bittorrent-dht's choice.
    received = report["quirks"]["webtorrent_queries_received"]["w1"]
    assert {"frobnicate", "frobnicate_node", "frobnicate_peers"} <= set(received), received


def test_webtorrent_quirks(scenario):
    report = _checked(scenario)
    quirks = report["quirks"]
    assert quirks["version_field_v"] is None and report["wire"]["versions"] == []  # no `v`
    assert quirks["bep42_ip_field"] is None  # no `ip` in replies
    assert quirks["get_peers_token_length"] == 20  # SHA-1(ip + secret)
    assert quirks["token_bound_to_infohash"] is False  # a token is valid for any infohash
    assert quirks["implied_port_honoured"] and quirks["announce_good_token_stored"], quirks
    assert quirks["webtorrent_pings_back_querier"] is False, quirks  # trusts queriers as is
    assert quirks["loopback_127_answered"] and quirks["loopback_127_added_to_table"], quirks
    assert quirks["loopback_127_served_in_nodes_by"] == ["wt-1"], quirks  # and hands it out
    # mldht does not follow a loopback address handed out by a non-loopback node.
    assert quirks["mldht_queried_127_node_learnt_from_webtorrent"] == {}, quirks
    assert quirks["mldht_D_table_has_127_node"] is False, quirks
    # BEP 43 read-only queriers (the mldht CLI) are kept by bittorrent-dht (not by mldht)
    # and handed out to others after they are gone.
    assert quirks["read_only_cli_node_in_webtorrent_tables"], quirks
    assert quirks["read_only_cli_node_in_mldht_tables"] == [], quirks
    assert quirks["gone_read_only_node_served_in_nodes_by"], quirks
    assert report["wire"]["transaction_id_lengths"] == [2, 4]  # its queries: 2; our echoes: 4
    assert quirks["webtorrent_errors"] == {"w1": [], "w2": []}, quirks


def test_mldht_handles_every_webtorrent_message(scenario):
    report = _checked(scenario)
    for node, stats in report["mldht"].items():
        assert stats["malformed_received"] == 0, (node, stats)
        assert stats["receive_path_failures"] == 0, (node, stats)
        assert stats["unmatched_received"] == 0, (node, stats)
    assert report["wire"]["undecodable"] == 0
    assert set(report["wire"]["queries"]) == {"ping", "find_node", "get_peers", "announce_peer"}


def test_capture_covers_every_message_kind(scenario):
    report = _checked(scenario)
    capture = report["capture"]
    assert 0 < capture["bytes"] < 300_000, capture
    sent, received = capture["sent"], capture["received"]
    for kind in ("q:ping", "q:find_node", "q:get_peers", "q:announce_peer", "r", "e:203"):
        assert sent.get(kind), (kind, capture)
    for kind in ("q:ping", "q:find_node", "q:get_peers", "q:announce_peer", "q:get",
                 "q:frobnicate", "r"):
        assert received.get(kind), (kind, capture)
    assert "undecodable" not in sent and "undecodable" not in received, capture
