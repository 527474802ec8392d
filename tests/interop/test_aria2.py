"""Interop with aria2 1.36 (its DHT runs while it fetches a magnet link), in the lab namespace.

One scenario run (scenario_aria2.py "all", about 30 s) feeds every test: aria2 bootstraps
from one mldht node, announces itself, connects to a peer that mldht announced, and answers
mldht's probes; the whole run is captured to a pcap.
"""

from __future__ import annotations

import shutil

import pytest

import lab

pytestmark = pytest.mark.lab("aria2")

INSTALL_HINT = "aria2c not found: install it with `apt-get install aria2`"


@pytest.fixture(scope="module")
def report(lab_runs) -> dict:
    return lab_runs.outcome("aria2", INSTALL_HINT if shutil.which("aria2c") is None else None)


_checked = lab.checked


def test_aria2_version(report):
    report = _checked(report)
    assert report["aria2"]["version"].startswith("1."), report["aria2"]
    assert report["aria2"]["rpc_version"] == report["aria2"]["version"]


def test_aria2_bootstrapped_from_one_mldht_node_keeps_it(report):
    report = _checked(report)
    boot = report["bootstrap"]
    assert boot["entry_in_dht_dat"], boot  # id and address of n1 in dht.dat
    assert boot["dht_dat_format"] == 2
    assert boot["first_query_to_n1"] == "ping", boot
    assert boot["aria2_in_n1_table"] and boot["aria2_verified_by_n1"], boot
    assert boot["aria2_id_matches_queries"], boot
    assert {"n2", "n3"} <= set(boot["dht_dat_nodes"]), boot  # learnt through n1
    assert boot["graceful_shutdown_logged"], boot
    assert boot["stop_exit_code"] == 7, boot  # 7: a download left unfinished (normal)


def test_aria2_restarts_from_its_dht_file(report):
    report = _checked(report)
    restart = report["restart"]
    assert restart["same_id"], restart
    assert restart["find_node_seconds"] is not None and "n1" in restart["find_node_to"], restart


def test_peer_announced_by_aria2_is_found_by_cli_and_library(report):
    report = _checked(report)
    announce = report["announce"]
    ip, port = announce["aria2_peer"]
    assert announce["announce_ports"] == [report["aria2"]["listen_port"]], announce
    assert port != report["aria2"]["dht"][1]
    assert announce["stored_seconds"] is not None, announce
    assert announce["stored_in"], announce
    cli = announce["cli"]
    assert cli["exit"] == 0 and cli["found_aria2"], cli
    assert cli["found_listener"], cli
    library = announce["library"]
    assert library["found_aria2"], library


def test_aria2_connects_to_peer_announced_by_mldht(report):
    report = _checked(report)
    connect = report["connect"]
    assert connect["handshake_info_hash_ok"], connect
    assert connect["handshake_from_aria2_ip"], connect
    assert connect["handshake_seconds"] is not None and connect["handshake_seconds"] < 40
    assert report["listener_announce"]["accepted_by"], report["listener_announce"]


def test_mldht_reads_aria2_replies(report):
    report = _checked(report)
    probes = report["probes"]
    results = probes["results"]
    for name in ("ping", "find_node", "get_peers", "get_peers_unknown_hash",
                 "announce_peer_implied_port", "get_peers_after_announce"):
        assert results[name]["outcome"] == "response", (name, results[name])
        assert results[name]["v"] == probes["version"], (name, results[name])
    assert probes["version"].startswith("A2 "), probes["version"]
    assert results["find_node"]["nodes"] > 0
    assert probes["token_length"] == 20
    # aria2 1.36 never sends KRPC errors: a bad token, a missing port and unknown methods
    # all go unanswered (mldht reports a typed timeout).
    for name in ("announce_peer_bad_token", "announce_peer_implied_port_without_port",
                 "unknown_method", "unknown_method_with_target"):
        assert results[name]["outcome"] in ("timeout", "error"), (name, results[name])
    assert results["announce_peer_bad_token"]["outcome"] != "response"
    assert isinstance(probes["answers_unknown_method"], bool)
    # implied_port is ignored: aria2 stores the explicit port, not the UDP source port.
    implied = probes["implied_port"]
    assert implied["stored_explicit_port"] and not implied["stored_udp_port"], implied


def test_aria2_reads_mldht_errors_and_replies(report):
    report = _checked(report)
    errors = report["aria2_read_errors"]
    assert errors["announces_to_n3"] >= 1 and errors["received_error_203"], errors
    assert set(report["aria2_queries"]) >= {"ping", "get_peers", "announce_peer"}
    for label, stats in report["mldht_stats"].items():
        assert stats["receive_path_failures"] == 0, (label, stats)
        assert stats["malformed_received"] == 0, (label, stats)


def test_capture_covers_every_message_kind(report):
    report = _checked(report)
    capture = report["capture"]
    assert 0 < capture["bytes"] < 300_000, capture
    sent, received = capture["sent"], capture["received"]
    for method in ("ping", "find_node", "get_peers", "announce_peer"):
        assert sent.get(f"q:{method}"), (method, sent)
        assert received.get(f"r:{method}"), (method, received)
        assert received.get(f"q:{method}"), (method, received)
    for method in ("ping", "find_node", "get_peers", "announce_peer"):
        assert sent.get(f"r:{method}"), (method, sent)
    assert received.get("e:203"), received  # n3 refuses every token
    assert received.get("q:frobnicate"), received
    assert capture["reply_problems"] == [], capture


def test_library_implied_port_announce_reaches_mldht_and_aria2(report):
    result = _checked(report)["library_implied_port_announce"]
    assert "aria2" in result["announced_to"], result
    assert result["mldht_stored"] == [result["prober_udp_port"]], result  # implied_port honoured
    assert result["aria2_stored"], result


def test_library_implied_port_announce_gives_aria2_a_usable_port(report):
    # aria2 ignores implied_port: mldht puts its UDP port in `port` too (it once sent 1).
    result = _checked(report)["library_implied_port_announce"]
    assert result["aria2_stored"] == [result["prober_udp_port"]], result
