"""Interop with Transmission 3.00 (jech/dht): one run of scenario_transmission.py "all" in the
lab namespace (about a minute, two at most), whose report every test below checks.

transmission-daemon must be installed: without it these tests fail (they are never skipped).
"""

from __future__ import annotations

import shutil

import pytest

import lab

pytestmark = pytest.mark.lab("transmission")

SCENARIO_TIMEOUT = 300.0
INSTALL_MESSAGE = ("transmission-daemon is not installed: apt-get install transmission-daemon "
                   "(and transmission-cli) to run the Transmission interop tests")


@pytest.fixture(scope="module")
def run(lab_runs) -> dict:
    missing = INSTALL_MESSAGE if shutil.which("transmission-daemon") is None else None
    return lab_runs.outcome("transmission", missing)


report_of = lab.checked


def test_bootstrap_from_one_mldht_node(run):
    report = report_of(run)
    boot = report["bootstrap"]
    assert boot["first_query_to_mldht_s"] is not None, boot
    # Transmission found the other mldht nodes through the single dht.bootstrap entry...
    assert boot["mldht_nodes_queried_by_transmission"] >= 20, boot
    # ...and saved its table at SIGTERM (only done with >= 40 good nodes) with that node in it.
    assert report["transmission_exit"]["code"] == 0, report["transmission_exit"]
    assert boot["dht_dat_written"], boot
    assert not boot["not_saving_logged"], boot
    assert boot["entry_node_in_dht_dat"], boot
    assert boot["dht_dat_nodes"] >= 40, boot
    assert boot["dht_dat_mldht_nodes"] >= 30, boot
    assert boot["dht_dat_id"] == report["probes"]["ping"]["id"], boot


def test_its_announce_is_found_by_mldht(run):
    report = report_of(run)
    found = report["its_announce"]
    assert found["first_announce_peer_s"] is not None, found
    assert found["stored_by_mldht_s"] is not None, found
    for query in report["transmission_queries"]["announce_peer"]:
        assert query["port"] == found["transmission_peer"][1] and query["token_length"] == 8
    assert found["cli"].get("exit") == 0, found["cli"]
    assert found["cli_found"], found["cli"]
    assert found["api_found"], found["api"]
    assert found["cli_found_s"] is not None and found["api_found_s"] is not None


def test_connects_to_the_peer_mldht_announced(run):
    report = report_of(run)
    connect = report["connect"]
    assert report["listener"]["announced_to"] >= 1, report["listener"]
    assert connect["handshake_s"] is not None, connect
    assert connect["info_hash_matches"], connect
    assert connect["from_transmission_ip"], connect


def test_mldht_handles_its_replies_and_errors(run):
    report = report_of(run)
    probes = report["probes"]
    assert "error" not in probes, probes
    for name in ("ping", "find_node", "get_peers", "announce_peer_good_token",
                 "get_peers_after_announce"):
        assert probes[name]["outcome"] == "response", (name, probes[name])
        assert probes[name]["v"] is None, (name, probes[name])  # Transmission sends no `v`
    assert probes["find_node"]["nodes"] is not None, probes["find_node"]
    assert probes["get_peers"]["token_length"] == 8, probes["get_peers"]
    assert probes["get_peers"]["values"] is None, probes["get_peers"]
    after = probes["get_peers_after_announce"]
    assert [lab.lab_ip(202), 6881] in (after["values"] or []), after
    assert after["nodes"] is not None, after  # values and nodes together
    bad = probes["announce_peer_bad_token"]
    assert (bad["outcome"], bad["code"]) == ("error", 203), bad
    assert bad["message"] == "Announce_peer with wrong token", bad
    # jech/dht drops queries for methods it does not know (no 204, no BEP 5 fallback).
    assert probes["unknown_method"]["outcome"] == "timeout", probes["unknown_method"]
    assert probes["unknown_method_with_target"]["outcome"] == "timeout"
    queries = report["transmission_queries"]
    assert {"ping", "find_node", "get_peers", "announce_peer"} <= set(queries["by_method"])
    assert queries["v"] == [], queries
    stats = report["mldht_stats"]
    assert stats["malformed_received"] == 0 and stats["receive_path_failures"] == 0, stats


def test_capture_covers_every_message_type(run):
    report = report_of(run)
    capture = report["capture"]
    assert capture["bytes"] < 400_000, capture
    sent, received = capture["sent"], capture["received"]
    # The nodes saw every query Transmission sent them; so must the capture (and when it
    # does not, its tcpdump counters and time span say why).
    for method, count in report["transmission_queries"]["by_method"].items():
        assert sent.get(f"q:{method}", 0) >= count, (method, count, capture)
    for kind in ("q:ping", "q:find_node", "q:get_peers", "q:announce_peer", "r", "e:203"):
        assert sent.get(kind), (kind, capture)
    for kind in ("q:ping", "q:find_node", "q:get_peers", "q:announce_peer", "r",
                 "q:mldht_unknown"):
        assert received.get(kind), (kind, received)
    assert "undecodable" not in sent and "undecodable" not in received, capture
