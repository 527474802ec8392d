"""libtorrent in the lab namespace (scenario_libtorrent.py), under its default DHT settings:
join through one mldht node, announce both ways, and its real replies and errors."""

from __future__ import annotations

import pytest

from mldht.capture import read_datagrams
from mldht.replay import analyze

pytestmark = [pytest.mark.network, pytest.mark.lab("libtorrent")]


def test_libtorrent_keeps_the_mldht_entry_node(lab_report):
    assert lab_report["joined_seconds"] is not None, "libtorrent never queried the entry node"
    assert lab_report["entry_in_table"], lab_report["libtorrent_table"]


def test_libtorrent_peer_found_by_library_and_cli(lab_report):
    peer = "198.18.10.1:7001"
    assert lab_report["lt_announce_stored_seconds"] is not None
    assert peer in lab_report["library_found"]
    assert lab_report["cli"]["exit"] == 0, lab_report["cli"]["stderr"]
    assert peer in lab_report["cli"]["peers"]


def test_mldht_peer_found_by_libtorrent(lab_report):
    assert lab_report["mldht_announced_to"] >= 1
    assert "198.18.2.1:7777" in lab_report["lt_found"]
    assert lab_report["lt_lookup_seconds"] is not None


def test_libtorrent_replies_and_errors_as_typed_messages(lab_report):
    probe = lab_report["probe"]
    assert probe["ping"]["shape"].startswith("r{id")
    assert probe["ping"]["version"].startswith("4c54")  # "LT"
    assert probe["find_node"]["nodes"] >= 1
    assert probe["get_peers_unknown_hash"]["token_length"] >= 1
    assert probe["announce_bad_token"]["code"] == 203
    assert probe["announce_good_token"]["shape"].startswith("r{id")
    assert "198.18.2.1:6999" in probe["get_peers_after_announce"]["values"]
    # libtorrent answers an unknown method with 203 (not BEP 5's 204), and one carrying a
    # target like find_node.
    assert probe["unknown_method"]["code"] == 203
    assert "nodes" in probe["unknown_method_with_target"]
    assert probe["malformed_missing_info_hash"]["code"] == 203
    assert probe["malformed_short_id"]["code"] == 203
    assert probe["not_bencode"]["shape"] == "timeout"  # dropped silently


def test_replay_command_against_libtorrent(lab_report):
    # WebTorrent's captured queries, replayed to libtorrent: all answered within BEP 5
    # (libtorrent's 203 for unknown methods and for the replayed, foreign tokens included).
    replay = lab_report["replay_to_libtorrent"]
    assert replay["exit"] == 0, replay
    assert replay["replayed"] >= 100 and replay["problems"] == [], replay
    assert replay["answered"] == replay["replayed"], replay  # unknown methods too (with 203)
    assert replay["differences"] > 0  # libtorrent is not WebTorrent: `p`, 203 instead of silence


def test_mldht_never_banned_by_libtorrent(lab_report):
    assert lab_report["bans"] == []


def test_fresh_libtorrent_capture_decodes_and_pairs(lab_runs):
    analysis = analyze(read_datagrams(lab_runs.capture("libtorrent", "libtorrent.pcap")))
    assert analysis.clients["LT"] > 0 and analysis.clients["ML"] > 0
    assert analysis.reply_problems == []
    assert analysis.encoding_problems == []
    methods = analysis.methods()
    for method in ("ping", "find_node", "get_peers", "announce_peer"):
        assert methods.get(method), methods


def test_bep51_sampling_both_ways(lab_report):
    # libtorrent samples an mldht node: exactly what that node stores.
    theirs = lab_report["libtorrent_samples_mldht"]
    assert theirs is not None, "no dht_sample_infohashes_alert"
    assert theirs["samples"] == lab_report["mldht_0_stores"] and theirs["num"] == len(theirs["samples"])
    assert theirs["interval"] == 0  # everything fits: nothing held back
    # mldht samples libtorrent, which stores at least the infohash the probe announced.
    ours = lab_report["mldht_samples_libtorrent"]
    assert "error" not in ours, ours
    assert ours["num"] >= 1 and len(ours["samples"]) == ours["num"]
    assert 0 <= ours["interval"] <= 21600 and ours["nodes"] >= 1
