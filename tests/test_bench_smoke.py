"""The performance benchmarks of tools/bench/ run in a tiny configuration and print sane
figures (no timed assertions: the figures themselves depend on the host)."""

from __future__ import annotations

import shutil

import pytest

import benchtools


def test_codec_figures_are_positive():
    rows = benchtools.load("codec").measure(number=20, repeat=1)
    assert len(rows) == 9
    for row in rows:
        assert row["bytes"] > 0
        timings = [value for key, value in row.items() if key.endswith("_us")]
        assert len(timings) >= 5 and all(value > 0 for value in timings), row
    sizes = {row["message"]: row["bytes"] for row in rows}
    assert sizes["find_node reply (8 nodes)"] > 8 * 26
    assert sizes["get_peers reply (50 values)"] > 50 * 6


def test_memory_figures_are_positive():
    rows = benchtools.load("memory").measure(peers=2_000, tables=2, pending=200)
    cases = {row["case"]: row for row in rows}
    assert set(cases) == {"peers, swarms of 50", "peers, swarms of 500", "routing", "pending"}
    assert cases["peers, swarms of 50"]["items"] == 2_000
    assert cases["routing"]["in_buckets"] == 2 * 20 * 8
    assert cases["pending"]["items"] == 200
    for row in rows:
        assert row["tracemalloc_bytes_per_item"] > 0, row


def test_store_figures_are_positive():
    rows = benchtools.load("stores").measure(items=50, peers=20, number=200, repeat=1)
    assert [row["operation"] for row in rows] == [
        "ItemStore.put, full", "PeerStore.announce, full swarm", "PeerStore.get_packed, 50 values"]
    for row in rows:
        assert row["us_per_op"] > 0, row


@pytest.mark.network
@pytest.mark.parametrize("python_loadgen", [False, True], ids=["c-loadgen", "python-loadgen"])
def test_throughput_answers_every_target(python_loadgen):
    if not python_loadgen and not (shutil.which("gcc") or shutil.which("cc")):
        pytest.fail("tools/bench/throughput.py builds loadgen.c: install gcc (or run it with "
                    "--python-loadgen, which the other parametrization covers)")
    pytest.importorskip("libtorrent")
    result = benchtools.load("throughput").measure(
        targets=["echo", "mldht", "libtorrent"], kinds=["ping", "find_node", "get_peers_values"],
        seconds=0.5, warmup=0.2, depths=2, window=32, sources=4, python_loadgen=python_loadgen)
    rows = {(row["target"], row["query"]): row for row in result["rows"]}
    assert result["config"]["loadgen"] == ("Python" if python_loadgen else "C")
    assert rows[("rig ceiling", "find_node (echo, 8 nodes)")]["replies_per_s"] > 0
    for target in ("mldht", "libtorrent"):
        for kind in ("ping", "find_node", "get_peers_values"):
            row = rows[(target, kind)]
            assert row["replies"] > 0 and row["replies_per_s"] > 0, row
            assert 0 <= row["loadgen_cpu_pct"], row
        assert rows[(target, "find_node")]["nodes"] == 8, rows[(target, "find_node")]
        assert rows[(target, "get_peers_values")]["values"] == 50, rows[(target, "get_peers_values")]
        assert rows[(target, "get_peers_values")]["token"]
    assert set(result["ratio_to_libtorrent"]["mldht"]) == {"ping", "find_node", "get_peers_values"}


def test_lookups_benchmark_compares_both_traversals():
    # Virtual time, fixed seed: the comparison is deterministic, not a timing.
    rows = benchtools.load("lookups").measure(nodes=150, lookups=30, dead=0.2, seed=2)
    mine, theirs = rows["mldht"], rows["libtorrent"]
    assert mine["success"] >= 0.9 and theirs["success"] >= 0.9
    assert mine["latency_p90"] < theirs["latency_p90"]
    assert mine["queries_mean"] > 0 and theirs["queries_mean"] > 0


@pytest.mark.network
def test_http_load_figures(capsys):
    """tools/bench/http_load.py, small: the node answers every ping in each phase and the
    HTTP clients get no error."""
    bench = benchtools.load("http_load")
    assert bench.main(["--clients", "20", "--seconds", "1", "--dht-rate", "40", "--sources", "20",
                       "--poll-interval", "0.5", "--json"]) == 0
    import json
    result = json.loads(capsys.readouterr().out)
    assert set(result["dht"]) == {"without_http", "with_http_saturating", "with_http_polling",
                                  "without_http_again"}
    for phase in result["dht"].values():
        assert phase["sent"] >= 30 and phase["lost"] == 0, phase
        assert phase["p99_ms"] > 0
    for http in result["http"].values():
        assert http["requests"] >= 20 and http["errors"] == 0, http


@pytest.mark.network
def test_peer_finder_loopback_figures(capsys, monkeypatch):
    """tools/bench/peer_finder_loopback.py, small: 8 nodes in host processes; every announced
    swarm found with its peer, the unannounced ones empty, and no node rate-limited."""
    from netguard import guarded_env
    guarded = guarded_env()  # the children (nodes, finder) inherit the network guard
    for name in ("PYTHONPATH", "MLDHT_NETGUARD_LOG", "MLDHT_EVENT_LOOP"):
        monkeypatch.setenv(name, guarded[name])
    bench = benchtools.load("peer_finder_loopback")
    assert bench.main(["--nodes", "8", "--announced", "20", "--unannounced", "5",
                       "--announcers", "4", "--timeout", "120", "--json"]) == 0
    import json
    result = json.loads(capsys.readouterr().out)
    assert result["records"] == 25 and result["missing_records"] == 0, result
    assert result["found"] == 20 and result["wrong_peers"] == 0, result
    assert result["unannounced_empty"] == 5, result
    assert result["lookup_errors"] == 0 and result["finder_exit"] == 0, result
    assert result["rate_limited_sum"] == 0, result
    assert result["finder_lookup_queries"] > 0 and result["lookups_per_second"] > 0


def test_peer_finder_in_the_simulator():
    """tools/bench/peer_finder_sim.py, small: the finder's own code on the virtual network
    finds every announced swarm and reports the others empty, no socket opened."""
    result = benchtools.load("peer_finder_sim").measure(
        nodes=300, infohashes=30, announced=20, loss=0.05, dead=0.2, seed=3, cold=2)
    assert result["announced_with_a_stored_peer"] == 20
    assert result["found"] == 20 and result["complete"] == 20 and result["wrong_peers"] == 0
    assert result["unannounced_empty"] == 10 and result["failed"] == 0
    assert 0 < result["queries_per_lookup"] < result["cold_get_peers_queries"]
    assert result["lookups_per_virtual_second"] > 0


@pytest.mark.network
def test_crawl_loopback_figures(capsys, monkeypatch):
    """tools/bench/crawl_loopback.py, small: 200 nodes in 2 host processes; the crawler
    finds at least 95 % of them in one sweep, with positive packet rates, and nobody is
    rate-limited."""
    from netguard import guarded_env
    guarded = guarded_env()  # the children (hosts, crawler) inherit the network guard
    for name in ("PYTHONPATH", "MLDHT_NETGUARD_LOG", "MLDHT_EVENT_LOOP"):
        monkeypatch.setenv(name, guarded[name])
    bench = benchtools.load("crawl_loopback")
    assert bench.main(["--nodes", "200", "--hosts", "2", "--join-wait", "40",
                       "--timeout", "100", "--json"]) == 0
    import json
    result = json.loads(capsys.readouterr().out)
    assert result["joined"] == 200 and result["join_failures"] == 0, result
    assert result["found_of_started"] >= 190, result
    assert result["answered_of_started"] >= 190, result
    assert result["found_not_started"] == 0, result
    assert result["datagrams_sent"] >= 190 and result["datagrams_received"] >= 190, result
    assert result["packets_per_second"] > 0 and result["walk_packets_per_second"] > 0, result
    assert result["packets_per_cpu_second"] > 0, result
    assert result["sweep_seconds"] > 0 and result["crawler_cpu_total_seconds"] > 0, result
    assert result["hosts_during_crawl"]["rate_limited"] == 0, result
    assert result["crawler_rate_limited"] == 0, result


@pytest.mark.network
def test_get_peers_emulated_figures():
    """tools/bench/get_peers_emulated.py, small: every mode finds each swarm's peer on a
    20,000-node emulated DHT and reports its times and queries (a child process: the bench
    goes into a network namespace of its own)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from netguard import guarded_env
    bench = Path(__file__).resolve().parents[1] / "tools" / "bench" / "get_peers_emulated.py"
    done = subprocess.run([sys.executable, str(bench), "--nodes", "20000", "--lookups", "3",
                           "--warm-up", "3", "--limit", "400", "--json"],
                          env=guarded_env(), capture_output=True, text=True, timeout=450)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert list(result["modes"]) == ["cold", "cached", "lt-fresh", "warm", "lt-warm"]
    for mode, row in result["modes"].items():
        assert row["lookups"] == 3 and row["success"] >= 2 / 3, (mode, row)
        assert 0 < row["first_peer_p50"] <= row["wall_p90"], (mode, row)
        assert row["queries_mean"] > 0, (mode, row)


def test_sybil_benchmark_compares_the_configurations(capsys):
    """tools/bench/sybil.py, tiny: every row printed, and the defences beat the configuration
    before them against eclipsing Sybils (which take most lookups without them)."""
    bench = benchtools.load("sybil")
    assert bench.main(["--nodes", "400", "--seeds", "1", "--fractions", "0,0.2",
                       "--strategies", "eclipse,poison", "--configs", "default,before",
                       "--lookups", "30", "--json"]) == 0
    import json
    report = json.loads(capsys.readouterr().out)
    rows = {(row["sybil"], row["strategy"], row["config"]): row for row in report["rows"]}
    assert set(rows) == {(0.0, "-", "default"), (0.0, "-", "before"),
                         (0.2, "eclipse", "default"), (0.2, "eclipse", "before"),
                         (0.2, "poison", "default"), (0.2, "poison", "before")}
    assert rows[(0.0, "-", "default")]["success"] >= 0.9
    assert rows[(0.2, "eclipse", "default")]["success"] > rows[(0.2, "eclipse", "before")]["success"]
    assert rows[(0.2, "poison", "before")]["made_up_share"] > 0.5
    assert rows[(0.2, "poison", "default")]["made_up_share"] < 0.1


def test_engine_path_benchmark_measures_both_codecs(capsys):
    """tools/bench/engine_path.py, tiny: every kind measured with and without the native
    codec, against a baseline checkout (this one)."""
    import json
    from pathlib import Path
    bench = benchtools.load("engine_path")
    assert bench.main(["--queriers", "128", "--seconds", "0.02", "--repeat", "1",
                       "--baseline", str(Path(__file__).resolve().parents[1]), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows) == {"native", "pure", "baseline"}
    for row in rows.values():
        assert set(row) == {"ping", "find_node", "get_peers", "exchange"}
        assert all(0 < value < 10_000 for value in row.values())


def test_get_peers_plot_draws_each_run_and_picks_the_first_mode_a_run_has(tmp_path, capsys):
    import json

    plot = benchtools.load("get_peers_plot")

    def run(nodes, modes):
        return {"nodes": nodes, "seed": 1, "modes": {
            mode: {"first_peer_p50": p50, "first_peer_p90": p90, "queries_mean": 30.0,
                   "resent_mean": 2.0 if mode.startswith("warm") else None,
                   "rows": [{"first_peer": p50}, {"first_peer": p90}, {"first_peer": None}]}
            for mode, (p50, p90) in modes.items()}}
    first = tmp_path / "a.json"
    first.write_text(json.dumps(run(100_000, {"warm": (0.2, 0.4), "lt-warm": (0.25, 0.5)})))
    second = tmp_path / "b.json"
    second.write_text(json.dumps(run(1_000_000, {"warm+alpha=4": (0.3, 0.6),
                                                 "lt-warm": (0.3, 0.7)})))
    out = tmp_path / "curves.png"
    assert plot.main([str(first), str(second), "--out", str(out),
                      "--mode", "mldht:warm+alpha=4|warm", "--mode", "lt-warm"]) == 0
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[4:] for line in table[1:5]] == [
        ["mldht", "0.20", "0.40", "32.0"], ["lt-warm", "0.25", "0.50", "30.0"],
        ["mldht", "0.30", "0.60", "32.0"], ["lt-warm", "0.30", "0.70", "30.0"]]
    # A file that is not the benchmark's JSON: one line, not a traceback.
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": 5}')
    with pytest.raises(SystemExit, match="no 'modes'"):
        plot.main([str(bad), "--out", str(out)])
    with pytest.raises(SystemExit, match="cannot read .*missing.json"):
        plot.main([str(tmp_path / "missing.json"), "--out", str(out)])
