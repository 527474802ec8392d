"""`mldht get-peers` against libtorrent on the emulated DHT (tools/bench/emulated_dht.py),
side by side in one run: how soon does each find the first peer of a swarm?

    python tools/bench/get_peers_emulated.py --nodes N [--lookups 50] [--seed S]
        [--baseline REV] [--modes cold,cached,lt-fresh,warm,lt-warm] [--warm-up SECONDS]
        [--emulator OPTION=VALUE] [--limit SECONDS] [--keep DIR] [--json]

The emulated DHT runs with its realistic defaults (round trips around 100 ms with a long
tail, 1 % of datagrams lost each way, about half of the contacts handed out silent, churn)
and `--swarms`: `--lookups` infohashes whose peers sit on their 8 closest answering nodes.
Each mode looks up the same infohashes, one after another:

- `baseline`: `python -m mldht get-peers` of git revision `--baseline` (a worktree made
  here and removed after), a fresh process each time;
- `cold`: today's `mldht get-peers`, a fresh process with an empty node cache each time;
- `cached`: the same with one node cache kept from run to run (made by one get-peers of
  another swarm first), as a user's ~/.cache/mldht keeps it;
- `lt-fresh`: a fresh process with a fresh libtorrent session each time, `dht_get_peers`
  at once (libtorrent's own bootstrap runs meanwhile, as in a torrent client's first
  seconds);
- `warm`: one mldht `Node`, joined and left `--warm-up` seconds to fill its table first,
  then `get_peers` one after another;
- `baseline-warm`: the same with revision `--baseline`'s package, in a child process;
- `lt-warm`: one libtorrent session, the same.

Per mode: the time to the first peer (for the commands from the process's start, as the
user waits; for the warm ones from the call), the whole command's wall time, p50 and p90
(a lookup without a peer counts as never), success, and get_peers queries per lookup
(libtorrent's from its `dht.dht_get_peers_out` counter, read once it has been still for a
second, so every datagram; mldht's warm nodes also say how many of their queries went a
second time after a silence, "resent"). libtorrent runs with its defaults except the public routers (never contacted),
BEP 42 enforcement (the emulator makes ids for public addresses, not 127/8 ones) and one
node per /24 (the emulator puts 256 nodes in a /24, the public DHT does not).

Runs in a network namespace of its own (`unshare -n`) where it can; the emulator on one
core, the clients on the last. Every child is ended by this script, by PID; the run is
bounded by `--limit`. Exit 0 once measured, 2 when the run could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for path in (str(HERE), str(REPO)):
    if path not in sys.path:
        sys.path.insert(0, path)

from crawl_emulated import BenchError, stop, wait_ready  # noqa: E402
from processes import child_env, cores, in_own_namespace, pinned  # noqa: E402

EMULATOR = HERE / "emulated_dht.py"
MODES = ("baseline", "baseline-warm", "cold", "cached", "lt-fresh", "warm", "lt-warm")
LOOKUP_TIMEOUT = 15.0
"""Seconds each lookup may take (the commands' --timeout)."""
LT_QUIET = 1.0
"""libtorrent's lookup is taken as over once its get_peers counter stood still this long."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="get_peers_emulated.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline", metavar="REV",
                        help="also time this git revision's get-peers (e.g. an older main)")
    parser.add_argument("--modes", default="cold,cached,lt-fresh,warm,lt-warm",
                        help=f"comma-separated, of {', '.join(MODES)} (baseline is added "
                             "when --baseline is given)")
    parser.add_argument("--warm-up", type=float, default=30.0, metavar="SECONDS",
                        help="how long the warm node and session fill their tables first")
    parser.add_argument("--emulator", action="append", default=[], metavar="OPTION=VALUE")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a NodeConfig field for mldht (as `mldht serve --set`), to try "
                             "a lookup setting")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE[,...]",
                        help="one more warm mldht node with these NodeConfig fields on top "
                             "of --set, side by side with the others (repeatable)")
    parser.add_argument("--limit", type=float, default=3600.0, metavar="SECONDS")
    parser.add_argument("--keep", metavar="DIR")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    args.modes += [f"warm+{variant}" for variant in args.variant]
    if args.baseline and not {"baseline", "baseline-warm"} & set(args.modes):
        args.modes.insert(0, "baseline")
    unknown = [m for m in args.modes if m.split("+")[0] not in MODES]
    if unknown:
        parser.error(f"unknown mode {unknown[0]!r} (known: {', '.join(MODES)})")
    if args.lookups < 1:
        parser.error("--lookups must be at least 1")
    return args


# --- one lookup, however it is made -------------------------------------------------------


async def timed_command(command: list[str], env: dict, cwd: Path | None,
                        timeout: float) -> dict:
    """Run a get-peers process: seconds from its start to its first peer line and to its
    exit, and its JSON summary (queried)."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        cwd=cwd)
    first = None
    summary: dict = {}
    try:
        async with asyncio.timeout(timeout):
            async for raw in process.stdout:
                line = json.loads(raw) if raw.startswith(b"{") else {}
                if line.get("type") == "peer" and first is None:
                    first = time.monotonic() - started
                elif line.get("type") == "summary":
                    summary = line
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
    stderr = (await process.stderr.read()).decode(errors="replace").strip()
    return {"first_peer": first, "wall": time.monotonic() - started,
            "queries": summary.get("queried"), "peers": summary.get("peers", 0),
            "exit": process.returncode, **({"stderr": stderr[-300:]} if stderr else {})}


def libtorrent_session(bind_ip: str, bootstrap: str):
    import libtorrent as lt
    return lt.session({
        "enable_dht": True, "dht_bootstrap_nodes": bootstrap,
        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "listen_interfaces": f"{bind_ip}:0",
        "dht_enforce_node_id": False, "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "alert_mask": int(lt.alert.category_t.dht_notification
                          | lt.alert.category_t.dht_operation_notification
                          | lt.alert.category_t.stats_notification),
    })


def libtorrent_counter(session, name: str, timeout: float = 2.0,
                       others: list | None = None) -> int | None:
    """The session's counter `name`; the peers of get_peers replies popped meanwhile go to
    `others`, with when they were popped (a lookup's peers must not be lost while its
    counter is read)."""
    import libtorrent as lt
    session.post_session_stats()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.wait_for_alert(100)
        value = None
        for alert in session.pop_alerts():
            if isinstance(alert, lt.session_stats_alert):
                value = alert.values[name]
            elif others is not None and isinstance(alert, lt.dht_get_peers_reply_alert):
                # An alert lives until the next pop_alerts: keep its peers, not the alert.
                others.append((time.monotonic(), alert.peers()))
        if value is not None:
            return value
    return None


def libtorrent_lookup(session, info_hash: bytes, timeout: float) -> dict:
    """`dht_get_peers` on a session: seconds to the first reply with peers, to the lookup's
    end (its get_peers counter still for LT_QUIET) and the queries it sent."""
    import libtorrent as lt
    before = libtorrent_counter(session, "dht.dht_get_peers_out") or 0
    started = time.monotonic()
    session.dht_get_peers(lt.sha1_hash(info_hash))
    first = None
    peers: set = set()
    last_count, still_since = before, started
    deadline = started + timeout
    pending: list = []  # alerts popped while the counter was read
    while time.monotonic() < deadline:
        if not pending:
            session.wait_for_alert(50)
        popped = time.monotonic()
        replies = pending + [(popped, alert.peers()) for alert in session.pop_alerts()
                             if isinstance(alert, lt.dht_get_peers_reply_alert)]
        for seen, found in replies:
            if found:
                if first is None:
                    first = seen - started
                peers.update(found)
        pending = []
        count = libtorrent_counter(session, "dht.dht_get_peers_out", 0.5, pending)
        now = time.monotonic()
        if count is not None and count != last_count:
            last_count, still_since = count, now
        elif first is not None and now - still_since >= LT_QUIET:
            break
    return {"first_peer": first, "wall": time.monotonic() - started,
            "queries": last_count - before, "peers": len(peers)}


def warm_child(argv: list[str]) -> int:
    """`--warm-child BOOTSTRAP IP WARM_UP IH...`: the warm mode with the mldht package of
    the tree in MLDHT_BENCH_TREE (an older revision's); prints the rows as JSON."""
    tree = os.environ.get("MLDHT_BENCH_TREE")
    if tree:
        sys.path.insert(0, tree)
    bootstrap, ip, warm_up, *hashes = argv
    args = argparse.Namespace(set=[], warm_up=float(warm_up))
    rows = asyncio.run(warm_mldht(args, bootstrap, [bytes.fromhex(h) for h in hashes],
                                  time.monotonic() + 3600, [], ip))
    print(json.dumps(rows))
    return 0


def lt_child(argv: list[str]) -> int:
    """A fresh process and session for one lookup (`--lt-child BOOTSTRAP BIND_IP IH`):
    prints a peer line at the first peer, then the summary, as get-peers --json does."""
    bootstrap, bind_ip, info_hash = argv
    session = libtorrent_session(bind_ip, bootstrap)
    result = libtorrent_lookup(session, bytes.fromhex(info_hash), LOOKUP_TIMEOUT - 1)
    if result["first_peer"] is not None:
        print(json.dumps({"type": "peer"}), flush=True)
    print(json.dumps({"type": "summary", "queried": result["queries"],
                      "peers": result["peers"]}), flush=True)
    return 0


# --- the run --------------------------------------------------------------------------------


def emulator_command(args, truth: Path) -> list[str]:
    command = [sys.executable, str(EMULATOR), "--nodes", str(args.nodes), "--seed",
               str(args.seed), "--duration", str(args.limit + 300), "--truth", str(truth),
               "--stdin-stop", "--swarms", str(args.lookups + 1)]
    for item in args.emulator:
        name, _, value = item.partition("=")
        command += [f"--{name.strip().lstrip('-').replace('_', '-')}", value]
    return command


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.inf
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarise(rows: list[dict]) -> dict:
    firsts = [r["first_peer"] if r["first_peer"] is not None else math.inf for r in rows]
    walls = [r["wall"] for r in rows]
    queries = [r["queries"] for r in rows if r.get("queries") is not None]

    def rounded(value: float) -> float | None:
        return None if math.isinf(value) else round(value, 3)
    return {"lookups": len(rows),
            "success": round(sum(r["first_peer"] is not None for r in rows) / len(rows), 3),
            "first_peer_p50": rounded(percentile(firsts, 0.5)),
            "first_peer_p90": rounded(percentile(firsts, 0.9)),
            "wall_p50": rounded(percentile(walls, 0.5)),
            "wall_p90": rounded(percentile(walls, 0.9)),
            "queries_mean": round(sum(queries) / len(queries), 1) if queries else None,
            # mldht's resends of a silent query are datagrams too (libtorrent's counter
            # counts every get_peers it sends): queries_mean + resent_mean of them.
            "resent_mean": (round(sum(r["resent"] for r in rows) / len(rows), 1)
                            if rows and all(r.get("resent") is not None for r in rows)
                            else None)}


async def run_modes(args, bootstrap: str, swarms: list[bytes], folder: Path,
                    client_cpu, deadline: float) -> dict:
    env = child_env()
    env["XDG_CACHE_HOME"] = str(folder / "cache-home")  # never the user's own cache
    results: dict[str, dict] = {}
    targets, spare = swarms[:args.lookups], swarms[args.lookups]

    def command_for(mode: str, index: int, info_hash: bytes) -> tuple[list[str], Path | None]:
        bind = f"127.0.{2 + index // 200}.{index % 200 + 2}:0"
        base = ["get-peers", "--json", "--bootstrap", bootstrap, "--bind", bind,
                "--timeout", str(LOOKUP_TIMEOUT)]
        if mode != "baseline":
            base += [f"--set={item}" for item in args.set]
        if mode == "baseline":
            return pinned([sys.executable, "-m", "mldht", *base, info_hash.hex()],
                          client_cpu), args.baseline_tree
        if mode == "cold":
            cache = folder / f"cold-{index}.json"
        elif mode == "cached":
            cache = folder / "cached.json"
        else:
            return pinned([sys.executable, str(Path(__file__).resolve()), "--lt-child",
                           bootstrap, bind.rsplit(":", 1)[0], info_hash.hex()],
                          client_cpu), None
        return pinned([sys.executable, "-m", "mldht", *base, "--cache", str(cache),
                       info_hash.hex()], client_cpu), None

    for mode in args.modes:
        rows = []
        if mode in ("baseline", "cold", "cached", "lt-fresh"):
            if mode == "cached":  # the cache a user has after one earlier run
                command, _ = command_for(mode, 199, spare)
                await timed_command(command, env, None, LOOKUP_TIMEOUT + 5)
            for index, info_hash in enumerate(targets):
                if time.monotonic() > deadline:
                    raise BenchError(f"--limit reached during {mode}")
                command, cwd = command_for(mode, index, info_hash)
                menv = dict(env, PYTHONPATH=str(cwd)) if cwd else env
                rows.append(await timed_command(command, menv, cwd, LOOKUP_TIMEOUT + 5))
        elif mode == "baseline-warm":
            if args.baseline_tree is None:
                raise BenchError("baseline-warm needs --baseline REV")
            command = pinned([sys.executable, str(Path(__file__).resolve()), "--warm-child",
                              bootstrap, "127.0.1.199", str(args.warm_up),
                              *[h.hex() for h in targets]], client_cpu)
            child = await asyncio.create_subprocess_exec(
                *command, env=dict(env, MLDHT_BENCH_TREE=str(args.baseline_tree)),
                stdout=asyncio.subprocess.PIPE)
            try:
                output, _ = await asyncio.wait_for(
                    child.communicate(), max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                child.kill()
                await child.wait()
                raise BenchError("--limit reached during baseline-warm") from None
            if child.returncode != 0:
                raise BenchError(f"baseline-warm child exited {child.returncode}")
            rows = json.loads(output)
        elif mode.startswith("warm"):
            extra = mode.partition("+")[2]
            rows = await warm_mldht(args, bootstrap, targets, deadline,
                                    [item for item in extra.split(",") if item],
                                    f"127.0.1.{200 + args.modes.index(mode)}")
        elif mode == "lt-warm":
            rows = await asyncio.to_thread(warm_libtorrent, args, bootstrap, targets, deadline)
        results[mode] = {**summarise(rows), "rows": rows}
        print(f"  {mode}: {format_row(results[mode])}", file=sys.stderr, flush=True)
    return results


async def warm_mldht(args, bootstrap: str, targets: list[bytes], deadline: float,
                     variant: list[str], ip: str) -> list[dict]:
    import dataclasses

    from mldht import Node, NodeConfig
    from mldht.config import parse_override
    config = dataclasses.replace(NodeConfig(), **dict(parse_override(item)
                                                      for item in args.set + variant))
    rows = []
    async with Node((ip, 0), bootstrap=[bootstrap], config=config) as node:
        await node.bootstrap(timeout=20)
        await asyncio.sleep(args.warm_up)
        table = sum(len(family.table) for family in node.engine.families)
        for info_hash in targets:
            if time.monotonic() > deadline:
                raise BenchError("--limit reached during warm")
            started = time.monotonic()
            first = None
            lookup = node.get_peers(info_hash, timeout=LOOKUP_TIMEOUT)
            async for _peer in lookup:
                if first is None:
                    first = time.monotonic() - started
            summary = lookup.summary
            rows.append({"first_peer": first, "wall": time.monotonic() - started,
                         "queries": summary.queried if summary else None,
                         "peers": summary.peers if summary else 0, "table": table,
                         **({"answered": summary.answered, "timed_out": summary.timed_out,
                             "first_peer_hop": summary.first_peer_hop,
                             "lookup_first_peer": summary.time_to_first_peer,
                             "resent": getattr(summary, "resent", None)}
                            if summary else {})})
    return rows


def warm_libtorrent(args, bootstrap: str, targets: list[bytes], deadline: float) -> list[dict]:
    session = libtorrent_session("127.0.1.251", bootstrap)
    time.sleep(args.warm_up)
    table = libtorrent_counter(session, "dht.dht_nodes")
    rows = []
    for info_hash in targets:
        if time.monotonic() > deadline:
            raise BenchError("--limit reached during lt-warm")
        rows.append({**libtorrent_lookup(session, info_hash, LOOKUP_TIMEOUT), "table": table})
    del session
    return rows


def format_row(row: dict) -> str:
    def seconds(value):
        return "never" if value is None else f"{value:.2f} s"
    queries = "?" if row["queries_mean"] is None else f"{row['queries_mean']:.1f}"
    if row.get("resent_mean") is not None:
        queries += f" (+{row['resent_mean']:.1f} resent)"
    return (f"first peer p50 {seconds(row['first_peer_p50'])}, p90 "
            f"{seconds(row['first_peer_p90'])}; wall p50 {seconds(row['wall_p50'])}, p90 "
            f"{seconds(row['wall_p90'])}; success {row['success']:.0%}; {queries} queries")


def run(args, folder: Path) -> dict:
    emulator_cpus, client_cpu = cores()
    truth_path = folder / "truth.json"
    log = folder / "emulator.log"
    deadline = time.monotonic() + args.limit
    args.baseline_tree = None
    if args.baseline:
        args.baseline_tree = folder / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f",
                        str(args.baseline_tree), args.baseline], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(log, "wb") as log_file:
        emulator = subprocess.Popen(pinned(emulator_command(args, truth_path), emulator_cpus),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=log_file, env=child_env())
    try:
        bootstrap = wait_ready(emulator, deadline, log)
        for _ in range(100):  # the truth names the swarms
            if truth_path.exists():
                break
            time.sleep(0.1)
        truth = json.loads(truth_path.read_text())
        swarms = [bytes.fromhex(h) for h in truth["swarms"]]
        print(f"emulated DHT of {args.nodes:,} nodes at {bootstrap}; {args.lookups} lookups "
              f"per mode", file=sys.stderr, flush=True)
        results = asyncio.run(run_modes(args, bootstrap, swarms, folder, client_cpu, deadline))
    finally:
        stop(emulator)
        if args.baseline_tree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(args.baseline_tree)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"nodes": args.nodes, "seed": args.seed, "lookups": args.lookups,
            "baseline": args.baseline, "warm_up": args.warm_up,
            "emulator": args.emulator, "modes": results}


def show(result: dict) -> None:
    print(f"{result['nodes']:,} emulated nodes, {result['lookups']} lookups per mode "
          f"(seed {result['seed']})")
    for mode, row in result["modes"].items():
        print(f"  {mode:9} {format_row(row)}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--lt-child"]:
        return lt_child(argv[1:])
    if argv[:1] == ["--warm-child"]:
        return warm_child(argv[1:])
    argv = in_own_namespace(argv)
    args = parse_args(argv)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="getpeers-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, folder)
    except (BenchError, subprocess.CalledProcessError, OSError) as exc:
        print(f"get_peers_emulated.py: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
