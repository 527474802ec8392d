"""Scenario 4: a DHT of 21 nodes of five implementations (scenario_mixed.py), in the lab.

7 mldht, 5 libtorrent (default DHT settings), 5 WebTorrent, 2 aria2 and 2 Transmission
nodes join through each other; every implementation's lookup finds a peer another
implementation announced, and no reference node drops or bans mldht. The peer finder
(tools/peer_finder.py), given every announced infohash in one file, finds every peer. The
crawler (tools/crawler.py, one sweep with BEP 51 samples) finds every node, names each client
from its `v`, gets samples from libtorrent and mldht, and is neither banned by libtorrent nor
rate-limited by mldht.
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


IMPLEMENTATIONS = ["libtorrent", "WebTorrent", "aria2", "Transmission", "mldht"]
CLIENT_NAMES = {
    "libtorrent": "libtorrent",  # v "LT" + version
    "mldht": "mldht (Python)",  # v "ML" + version
    "aria2": "aria2",  # v "A2" + version
    # These send no `v` at all (WebTorrent's bittorrent-dht 11, Debian's Transmission 3.00,
    # which gives the DHT library no version): the crawler must not make a name up.
    "WebTorrent": None,
    "Transmission": None,
}


def test_crawler_exits_0(lab_report):
    crawl = lab_report["crawler"]
    assert not crawl["timed_out"], crawl["log_tail"]
    assert crawl["exit_code"] == 0, crawl["log_tail"]
    assert crawl["crawls"] == [{"status": "complete", "sweeps_done": 1}], crawl["log_tail"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_crawler_finds_every_node(lab_report, implementation):
    figures = lab_report["crawler"]["implementations"][implementation]
    assert figures["nodes"] == lab_report["nodes"][implementation.lower()], figures
    missed = {ip: f"{node['outcome']} after {node.get('queries')} queries (bep51 "
                  f"{node.get('bep51')}), {'listed' if node['listed'] else 'never listed'}"
              for ip, node in figures["missed"].items()}
    assert figures["found"] == figures["nodes"], missed


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_crawler_names_every_client_right(lab_report, implementation):
    figures = lab_report["crawler"]["implementations"][implementation]
    assert figures["found"] > 0, "no node answered"  # only nodes that answered are named
    assert figures["clients"] == {str(CLIENT_NAMES[implementation]): figures["found"]}, \
        (figures["clients"], figures["v"])


def test_crawler_visits_only_the_scenario_s_nodes(lab_report):
    # Besides the nodes above, only the peer finder's node (gone by then) may be listed.
    crawl = lab_report["crawler"]
    assert set(crawl["others"]) <= {crawl["peer_finder_ip"]}, crawl["others"]


@pytest.mark.parametrize("implementation", ["libtorrent", "mldht"])
def test_crawler_gets_bep51_samples(lab_report, implementation):
    figures = lab_report["crawler"]["implementations"][implementation]
    assert figures["bep51"] == {"1": figures["nodes"]}, figures["per_node"]
    # Some of them store the announced infohashes, and nothing else is stored in this DHT.
    assert figures["samples"] > 0, figures["per_node"]
    assert figures["sampled"] and set(figures["sampled"]) <= {"lt", "wt", "ml"}, figures


def test_crawler_samples_are_what_mldht_stores(lab_report):
    crawl = lab_report["crawler"]
    nodes = crawl["implementations"]["mldht"]["per_node"]
    assert {ip: node.get("sampled") for ip, node in nodes.items()} == crawl["mldht_stored"]


def test_libtorrent_never_bans_the_crawler(lab_report):
    crawl = lab_report["crawler"]
    assert crawl["libtorrent_bans"] == [], crawl["libtorrent_bans"]


def test_mldht_never_rate_limits_the_crawler(lab_report):
    crawl = lab_report["crawler"]
    assert crawl["mldht_rate_limited"] == [0] * lab_report["nodes"]["mldht"]
