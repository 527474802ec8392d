"""The simulator (mldht.sim): the scheduler, the virtual network, and small whole runs of
real engines. Each run takes a second or a few of wall time; none opens a socket."""

from __future__ import annotations

import ast
import random
import socket
import time
from pathlib import Path

import pytest

from mldht import NodeConfig
from mldht.sim import (
    LatencyModel, Scenario, Scheduler, VirtualNetwork, format_report, run_scenario,
)

# --- the clock and the network ----------------------------------------------------------


def test_virtual_time_jumps_from_call_to_call_instead_of_waiting():
    scheduler = Scheduler()
    start = scheduler.now
    ran = []
    scheduler.call_later(3600, ran.append, "hour")
    scheduler.call_later(5, ran.append, "five")
    scheduler.call_later(5, ran.append, "five again")  # ties run in scheduling order
    wall = time.perf_counter()
    assert scheduler.run_until(lambda: len(ran) == 3)
    assert ran == ["five", "five again", "hour"]
    assert scheduler.now - start == pytest.approx(3600.0)
    scheduler.call_later(10, ran.append, "later")
    scheduler.advance(4)  # stops at now + 4, the call at +10 still waits
    assert scheduler.now - start == pytest.approx(3604.0) and len(ran) == 3
    assert time.perf_counter() - wall < 1.0


def test_the_simulator_drives_engines_without_an_event_loop():
    """No module of mldht.sim imports asyncio or socket: engines are driven from the
    scheduler's heap, not from a patched event loop. The one exception is `aio`, the
    adapter that runs asyncio programs (a Node and its driver) on top of the scheduler,
    and which nothing else in mldht.sim imports."""
    folder = Path(__file__).resolve().parents[1] / "mldht" / "sim"
    for path in sorted(folder.glob("*.py")):
        if path.name == "aio.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in {"asyncio", "socket", "selectors"}, (path, name)
                assert name not in ("aio", ".aio", "mldht.sim.aio"), (path, name)


def test_latency_is_fixed_per_link_and_spread_around_the_median():
    model = LatencyModel(median=0.1, sigma=0.5, seed=3)
    rng = random.Random(1)
    pairs = [(rng.getrandbits(32), rng.getrandbits(32)) for _ in range(2000)]
    latencies = sorted(model.one_way(a, b) for a, b in pairs)
    assert all(model.one_way(a, b) == model.one_way(b, a) for a, b in pairs[:50])
    assert 0.09 < latencies[1000] < 0.11
    assert latencies[1800] > 0.15 and latencies[200] < 0.07
    assert LatencyModel(seed=4).one_way(*pairs[0]) != model.one_way(*pairs[0])


def test_network_delivers_after_latency_and_nat_drops_unsolicited():
    scheduler = Scheduler()
    network = VirtualNetwork(scheduler, latency=LatencyModel(median=0.05, sigma=0.0), seed=1)
    got: dict[str, list] = {"open": [], "nat": []}
    open_side = network.attach(("198.51.100.1", 1000),
                               lambda d, s: got["open"].append((d, s, scheduler.now)))
    nat_side = network.attach(("198.51.100.2", 2000), lambda d, s: got["nat"].append((d, s)),
                              nat=True)
    start = scheduler.now
    open_side.sendto(b"unsolicited", ("198.51.100.2", 2000))
    scheduler.advance(1)
    nat_side.sendto(b"hello", ("198.51.100.1", 1000))
    scheduler.advance(1)
    open_side.sendto(b"reply", ("198.51.100.2", 2000))
    open_side.sendto(b"to nobody", ("198.51.100.3", 3000))
    scheduler.advance(1)
    stats = network.stats
    assert got["nat"] == [(b"reply", ("198.51.100.1", 1000))]
    assert [(d, s) for d, s, _ in got["open"]] == [(b"hello", ("198.51.100.2", 2000))]
    assert got["open"][0][2] - start == pytest.approx(1.05)
    assert stats.nat_dropped == 1 and stats.to_absent == 1 and stats.delivered == 2


# --- whole runs -------------------------------------------------------------------------


def small(**overrides) -> Scenario:
    settings = dict(nodes=300, lookups=60, seed=4, bootstrap="seeded")
    settings.update(overrides)
    return Scenario(**settings)


def test_same_seed_same_report_and_another_seed_another():
    scenario = dict(nodes=200, lookups=40, loss=0.05, dead=0.1, nat=0.1, churn=0.2, sybil=0.02)
    first = run_scenario(small(**scenario)).report
    again = run_scenario(small(**scenario)).report
    other = run_scenario(small(seed=5, **scenario)).report
    assert first == again
    assert first != other
    assert first["population"]["joined"] > 0  # churn really brought real joins in


def test_no_loss_every_lookup_succeeds():
    result = run_scenario(small())
    report = result.report
    for kind in ("get_peers", "find_node"):
        summary = report["lookups"][kind]
        assert summary["count"] == 30
        assert summary["success_rate"] == 1.0, format_report(report)
        # Nothing is lost; a lookup whose k closest have answered does not wait for a slow
        # query to a node closer ones overtook (aggressive lookups), which counts as no answer.
        assert summary["timeouts"]["max"] <= 1
        assert summary["timeouts"]["mean"] < 0.2
        assert 0.05 < summary["latency_s"]["p50"] < 3.0
        assert summary["hops"]["max"] >= 1  # the result was not all in the first table
    tables = report["routing_tables"]["after_bootstrap"]
    assert tables["size"]["min"] >= 8 and tables["full_bucket_fraction"] > 0.5
    assert report["node_counters"]["receive_path_failures"] == 0
    assert report["node_counters"]["id_changes"] == 0  # BEP 42 ids from the start
    assert min(report["announces"]["stored_on"].values()) >= 1
    assert result.resources["wall_seconds"] > 0


def test_real_join_bootstrap():
    report = run_scenario(small(nodes=150, lookups=40, bootstrap="join")).report
    assert report["lookups"]["all"]["success_rate"] == 1.0, format_report(report)
    tables = report["routing_tables"]["after_bootstrap"]
    assert tables["size"]["min"] >= 8
    assert report["virtual_seconds"]["bootstrap"] > 0.5


def test_loss_and_dead_nodes_cost_time_not_success():
    clean = run_scenario(small()).report
    report = run_scenario(small(loss=0.1, dead=0.2)).report
    assert report["population"]["dead"] == 60
    assert report["network"]["lookup_phase"]["lost"] > 0
    assert report["network"]["lookup_phase"]["to_absent"] > 0
    assert report["routing_tables"]["at_end"]["entry_fraction_gone"] > 0.1
    assert report["lookups"]["get_peers"]["success_rate"] >= 0.95, format_report(report)
    assert report["lookups"]["all"]["success_rate"] >= 0.9, format_report(report)
    # Dead nodes cost queries and time (lookups abandon them after the soft timeout rather
    # than count hard timeouts, so `timeouts` stays low).
    assert report["lookups"]["all"]["queries"]["mean"] > clean["lookups"]["all"]["queries"]["mean"]
    assert report["lookups"]["all"]["latency_s"]["p50"] > clean["lookups"]["all"]["latency_s"]["p50"]


def test_nat_nodes_do_not_break_lookups():
    report = run_scenario(small(nat=0.3)).report
    assert report["lookups"]["all"]["success_rate"] >= 0.95, format_report(report)
    assert report["lookups"]["all"]["from_nat"]["count"] > 0
    # Seeded tables hold only reachable nodes; NAT'd ones may slip in through the pings that
    # verify them right after they queried (their mapping is still open), but stay rare.
    assert report["routing_tables"]["at_end"]["entry_fraction_nat"] < 0.05


NO_SYBIL_DEFENCES = {"max_believed_shared_bits": 0, "store_nodes": 8, "widen_peerless_lookups": 8}
"""The configuration before the Sybil defences (as tools/bench/sybil.py's "before")."""


def test_sybils_eclipse_lookups_and_the_defences_protect_them():
    # Every honest node with a BEP 42 id here: enforcement would hide the legacy ones (the
    # trade-off tools/bench/sybil.py measures).
    honest = run_scenario(small(nodes=200, lookups=40, legacy_ids=0.0)).report
    attacked = run_scenario(small(nodes=200, lookups=40, sybil=0.05, legacy_ids=0.0,
                                  config=NodeConfig(**NO_SYBIL_DEFENCES))).report
    enforced = run_scenario(small(nodes=200, lookups=40, sybil=0.05, legacy_ids=0.0,
                                  config=NodeConfig(enforce_node_id=True,
                                                    **NO_SYBIL_DEFENCES))).report
    # The default configuration does not believe ids 128 bits from the target.
    defended = run_scenario(small(nodes=200, lookups=40, sybil=0.05, legacy_ids=0.0)).report
    assert defended["lookups"]["get_peers"]["success_rate"] >= 0.95, format_report(defended)
    assert defended["lookups"]["find_node"]["success_rate"] >= 0.95, format_report(defended)
    assert attacked["population"]["sybil_queries_answered"] > 0
    assert attacked["routing_tables"]["after_bootstrap"]["entries_to_sybil"] > 0
    assert attacked["lookups"]["get_peers"]["success_rate"] < honest["lookups"]["get_peers"]["success_rate"]
    assert enforced["lookups"]["get_peers"]["success_rate"] > attacked["lookups"]["get_peers"]["success_rate"]
    # A Sybil answering with an id its IP may not have is a failed query, not the closest
    # node found: with enforcement, find_node finds the true closest nodes again.
    assert attacked["lookups"]["find_node"]["success_rate"] < 0.8
    assert enforced["lookups"]["find_node"]["success_rate"] >= 0.95


def test_the_simulator_opens_no_socket(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the simulator opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "socketpair", refuse)
    report = run_scenario(small(nodes=60, lookups=10, bootstrap="join")).report
    assert report["lookups"]["all"]["count"] == 10


# --- the command line -------------------------------------------------------------------


def _simulate_tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "simulate.py"
    spec = importlib.util.spec_from_file_location("simulate_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_builds_the_node_config_from_preset_set_and_flags():
    tool = _simulate_tool()
    args = tool.parser().parse_args(["--preset", "kademlia", "--alpha", "4", "--set",
                                     "enforce_node_id=yes", "--set", "query_timeout=2.5"])
    config = tool.build_config(args)
    assert (config.alpha, config.soft_timeout, config.query_timeout) == (4, 4.0, 2.5)
    assert config.enforce_node_id is True
    with pytest.raises(SystemExit):
        tool.build_config(tool.parser().parse_args(["--set", "no_such_field=1"]))


def test_tool_prints_a_json_report(capsys):
    import json

    tool = _simulate_tool()
    assert tool.main(["--nodes", "60", "--lookups", "10", "--bootstrap", "seeded", "--json",
                      "--soft-timeout", "0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"]["scenario"]["config"] == {"soft_timeout": 0.5}
    assert printed["report"]["lookups"]["all"]["count"] == 10
    assert printed["resources"]["peak_rss_mb"] > 0
