"""Scenario 4: a DHT of 21 nodes of five implementations (scenario_mixed.py), in the lab.

7 mldht, 5 libtorrent (default DHT settings), 5 WebTorrent, 2 aria2 and 2 Transmission
nodes join through each other; every implementation's lookup finds a peer another
implementation announced, and no reference node drops or bans mldht. The peer finder
(tools/peer_finder.py), given every announced infohash in one file, finds every peer.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.network, pytest.mark.lab("mixed")]


def test_network_size_and_implementations(lab_report):
    nodes = lab_report["nodes"]
    assert sum(nodes.values()) >= 20, nodes
    assert all(count >= 2 for count in nodes.values()), nodes


@pytest.mark.parametrize("label", [
    "mldht finds libtorrent's peer", "mldht finds WebTorrent's peer",
    "WebTorrent finds libtorrent's peer", "WebTorrent finds mldht's peer",
    "libtorrent finds WebTorrent's peer", "libtorrent finds mldht's peer",
    "aria2-0 connects to mldht's peer", "aria2-1 connects to mldht's peer",
    "transmission-0 connects to mldht's peer", "transmission-1 connects to mldht's peer",
    "mldht finds aria2-0's peer", "mldht finds aria2-1's peer",
    "mldht finds transmission-0's peer", "mldht finds transmission-1's peer",
])
def test_every_implementation_s_lookup_succeeds(lab_report, label):
    outcome = lab_report["lookups"][label]
    assert outcome["found"], outcome


def test_mldht_stays_in_every_reference_routing_table(lab_report):
    tables = lab_report["tables"]
    assert len(tables) == 5 + 5 + 2, tables  # libtorrent, WebTorrent, aria2
    for name, table in tables.items():
        assert table["mldht"] >= 1, (name, table)
    for name, table in tables.items():  # libtorrent and WebTorrent keep every mldht node
        if not name.startswith("aria2"):
            assert table["mldht"] == lab_report["nodes"]["mldht"], (name, table)


def test_libtorrent_never_bans_mldht(lab_report):
    assert lab_report["libtorrent_bans"] == []


def test_mldht_nodes_are_used_by_the_others(lab_report):
    assert min(lab_report["mldht_tables"]) >= 8
    assert min(lab_report["mldht_queries_received"]) > 0


def test_mldht_limits_never_drop_the_reference_implementations(lab_report):
    # Per-IP rate limits are on (defaults): none of the real clients' traffic hit them.
    assert lab_report["mldht_rate_limited"] == [0] * lab_report["nodes"]["mldht"]
    # BEP 42: each learnt its external IP from the others' replies (ids start settled).
    assert lab_report["mldht_external_ips_right"] == lab_report["nodes"]["mldht"]


def test_peer_finder_exits_0(lab_report):
    finder = lab_report["peer_finder"]
    assert not finder["timed_out"], finder["log_tail"]
    assert finder["exit_code"] == 0, finder["log_tail"]
    assert finder["lines"] == 3, finder["records"]  # one line per infohash of the input


@pytest.mark.parametrize("implementation",
                         ["libtorrent", "WebTorrent", "aria2", "Transmission", "mldht"])
def test_peer_finder_finds_every_implementation_s_peers(lab_report, implementation):
    finder = lab_report["peer_finder"]
    expected = finder["expected"][implementation]
    assert expected, finder["expected"]  # the scenario ran clients of this implementation
    missed = [peer for peer in expected if not peer["found"]]
    assert not missed, (missed, finder["records"])


def test_peer_finder_reports_only_announced_peers(lab_report):
    # Every peer of this network is one the scenario announced: anything else is made up.
    finder = lab_report["peer_finder"]
    assert finder["unexpected"] == {"lt": [], "wt": [], "ml": []}, finder["records"]
