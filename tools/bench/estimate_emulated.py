"""`tools/crawler.py estimate` against the emulated DHT (tools/bench/emulated_dht.py), where
the truth is known: how close are the zone estimates, do their intervals cover the truth,
and what does an estimate cost?

    python tools/bench/estimate_emulated.py --nodes N [--seeds A-B] [--zones Z[,Z...]]
        [--repeat R] [--rate Q] [--emulator OPTION=VALUE] [--estimate-arg ARG]
        [--limit SECONDS] [--keep DIR] [--json]

For each emulator seed (a new emulated DHT each: ids, addresses, clients, sessions), and
each Z of `--zones`, runs `--repeat` estimates (each its own process, its own random zones)
and compares them with the emulator's truth, read just before and just after the estimate
(the mean of the two: nodes come and go meanwhile): `reachable` (online nodes that answer)
and `listed` (addresses the emulated nodes' tables name). Prints one row per estimate and
a summary per Z: mean and largest error, the runs within 3 %, the intervals that covered
the truth, and the median queries and seconds. Runs in a network namespace of its own
(`unshare -n`) where it can; every child is stopped by PID; the whole run is bounded by
`--limit`. Exit 0 once measured, 2 when the run could not be made.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for path in (str(HERE), str(REPO / "tools"), str(REPO)):
    if path not in sys.path:
        sys.path.insert(0, path)

from crawl_emulated import BenchError, emulator_command, stop, wait_ready  # noqa: E402
from processes import child_env, cores, die_with_parent, in_own_namespace, pinned  # noqa: E402

CRAWLER = REPO / "tools" / "crawler.py"


def seeds(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="estimate_emulated.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--seeds", type=seeds, default=[1], metavar="A-B")
    parser.add_argument("--zones", default="16", metavar="Z[,Z...]",
                        help="zones per estimate; several (4,8,16) to see the error fall")
    parser.add_argument("--repeat", type=int, default=1, help="estimates per seed and Z")
    parser.add_argument("--rate", type=float, default=None, help="the crawler's --rate")
    parser.add_argument("--emulator", action="append", default=[], metavar="OPTION=VALUE",
                        help="an emulated_dht.py option, e.g. unreachable share silent=0.3")
    parser.add_argument("--estimate-arg", action="append", default=[], metavar="ARG")
    parser.add_argument("--limit", type=float, default=3600.0, metavar="SECONDS")
    parser.add_argument("--every", type=float, metavar="S",
                        help="one estimate process per seed measuring every S seconds for "
                             "--duration (a series; with --emulator swing=0.28 the truth moves)")
    parser.add_argument("--duration", type=float, metavar="S")
    parser.add_argument("--keep", metavar="DIR", help="keep the databases and logs here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.zone_counts = [int(z) for z in args.zones.split(",")]
    return args


def read_truth(path: Path) -> dict:
    for _ in range(50):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.1)  # being rewritten
    raise BenchError(f"cannot read {path}")


def fresh_truth(path: Path, after: float) -> dict:
    """The truth as written after `after` (the emulator rewrites it every few seconds)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        truth = read_truth(path)
        if truth.get("time", 0) >= after:
            return truth
        time.sleep(0.5)
    return read_truth(path)


def one_seed(args, seed: int, folder: Path, deadline: float) -> list[dict]:
    others, last = cores()
    truth_path = folder / f"truth-{seed}.json"
    emulator_args = argparse.Namespace(nodes=args.nodes, seed=seed, limit=args.limit,
                                       emulator=args.emulator)
    emulator = subprocess.Popen(pinned(emulator_command(emulator_args, truth_path), others),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=open(folder / f"emulator-{seed}.log", "wb"),
                                env=child_env(), preexec_fn=die_with_parent)
    rows = []
    try:
        bootstrap = wait_ready(emulator, time.monotonic() + max(0.0, deadline - time.time()),
                               folder / f"emulator-{seed}.log")
        if args.every:
            return series(args, seed, bootstrap, truth_path, folder, deadline)
        run = 0
        for zones in args.zone_counts:
            for _ in range(args.repeat):
                run += 1
                db = folder / f"estimate-{seed}-{run}.sqlite"
                command = [sys.executable, str(CRAWLER), "estimate", "--bootstrap", bootstrap,
                           "--bind", f"127.0.0.{run % 200 + 2}:0", "--db", str(db),
                           "--zones", str(zones), "--json", "-q", *args.estimate_arg]
                if args.rate is not None:
                    command += ["--rate", str(args.rate)]
                before = fresh_truth(truth_path, time.time())
                left = deadline - time.time()
                if left <= 0:
                    raise BenchError("--limit reached")
                done = subprocess.run(pinned(command, last), capture_output=True,
                                      env=child_env(), timeout=left,
                                      preexec_fn=die_with_parent)
                if done.returncode != 0:
                    raise BenchError(f"estimate failed ({done.returncode}): "
                                     f"{done.stderr.decode()[-500:]}")
                after = fresh_truth(truth_path, time.time())
                result = json.loads(done.stdout.decode().strip().splitlines()[-1])
                rows.append(compare(seed, zones, result, before, after))
    finally:
        stop(emulator)
    return rows


def series(args, seed: int, bootstrap: str, truth_path: Path, folder: Path,
           deadline: float) -> list[dict]:
    """`estimate --every`: one process, a JSON line per measurement; the truth sampled every
    second meanwhile, each measurement compared with the truth's mean over its minute."""
    import threading
    _, last = cores()
    db = folder / f"series-{seed}.sqlite"
    command = [sys.executable, str(CRAWLER), "estimate", "--bootstrap", bootstrap, "--bind",
               "127.0.0.2:0", "--db", str(db), "--zones", str(args.zone_counts[0]), "--json",
               "-q", "--every", str(args.every), "--duration", str(args.duration),
               *args.estimate_arg]
    if args.rate is not None:
        command += ["--rate", str(args.rate)]
    samples: list[tuple[float, int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            truth = read_truth(truth_path)
            if not samples or truth["time"] > samples[-1][0]:
                samples.append((truth["time"], truth["reachable"], truth["listed"]))
            done.wait(1.0)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        finished = subprocess.run(pinned(command, last), capture_output=True, env=child_env(),
                                  timeout=max(1.0, deadline - time.time()),
                                  preexec_fn=die_with_parent)
    finally:
        time.sleep(2)
        done.set()
        sampler.join()
    if finished.returncode != 0:
        raise BenchError(f"estimate failed ({finished.returncode}): "
                         f"{finished.stderr.decode()[-500:]}")
    rows = []
    lines = [json.loads(line) for line in finished.stdout.decode().splitlines()]
    if lines:
        rows.append(sessions_against_truth(lines, db, read_truth(truth_path)))
    for line in finished.stdout.decode().splitlines():
        result = json.loads(line)
        end = result["at"]
        start = end - result["seconds"]
        window = [s for s in samples if start <= s[0] <= end] or \
            [min(samples, key=lambda s: abs(s[0] - end))]
        truth = {"reachable": sum(s[1] for s in window) / len(window),
                 "listed": sum(s[2] for s in window) / len(window)}
        row = compare(seed, args.zone_counts[0], result, truth, truth)
        row["measurement"] = result["measurement"]
        row["at"] = end
        rows.append(row)
    return rows


def rebuild(truth: dict):
    """The emulated network, rebuilt from the configuration its truth records."""
    from emulated.model import Client, EmulatedNetwork, EmulationConfig
    config = dict(truth["config"])
    config["clients"] = tuple(Client(c["code"], bytes.fromhex(c["v"]) if c["v"] else None,
                                     c["share"], c["bep51"], c["bep42"])
                              for c in config.pop("clients"))
    return EmulatedNetwork(EmulationConfig(**config))


def sessions_against_truth(lines: list[dict], db: Path, truth: dict) -> dict:
    """The series' churn and sessions (as `crawler.py estimate --every` measured them, read
    back from its database) against the truth: the same computation on who was online and
    answering in the same zones at the middle of each measurement."""
    import sqlite3

    import numpy as np
    from crawling.sessions import churn, kaplan_meier, median_length, sessions, survival_at
    network = rebuild(truth)
    started = truth["time"] - truth["elapsed"]
    middles = [line["at"] - line["seconds"] / 2 for line in lines]
    connection = sqlite3.connect(db)
    zones = connection.execute("SELECT DISTINCT zone, bits FROM zones").fetchall()
    measured: dict[tuple, list[int]] = {}
    for ip, port, sweep in connection.execute(
            "SELECT ip, port, sweep FROM visits WHERE outcome='answered' ORDER BY sweep"):
        measured.setdefault((ip, port), []).append(sweep - 1)
    connection.close()
    bits = zones[0][1]
    prefixes = np.array([int(zone.split("/")[0], 16) for zone, _ in zones], dtype=np.uint64)
    in_zones = np.isin(network.keys >> np.uint64(64 - bits), prefixes)
    answering = ~network.silent & in_zones
    actual: dict[int, list[int]] = {}
    for index, middle in enumerate(middles):
        for rank in np.nonzero(network.online_mask(middle - started) & answering)[0]:
            actual.setdefault(int(rank), []).append(index)
    result = {"measurements": len(lines)}
    for name, presence in (("measured", measured), ("truth", actual)):
        observed = sessions(presence, middles)
        curve = kaplan_meier(observed)
        steps = churn(presence, len(lines))
        result[name] = {
            "sessions": len(observed), "ended": sum(s.ended for s in observed),
            "median_s": median_length(curve),
            "survival": {f"{m} min": round(survival_at(curve, m * 60), 3)
                         for m in (2, 5, 10, 20)},
            "left_share": [s["left_share"] for s in steps],
            "joined_share": [s["joined_share"] for s in steps]}
    return {"sessions": result}


def compare(seed: int, zones: int, result: dict, before: dict, after: dict) -> dict:
    row = {"seed": seed, "zones": zones, "bits": result["bits"], "crawl": result["crawl"],
           "queries": result["queries"], "seconds": result["seconds"]}
    for name in ("reachable", "listed"):
        truth = (before[name] + after[name]) / 2
        estimate = result[name]
        value, low, high = estimate["value"], estimate["low"], estimate["high"]
        row[name] = {"truth": round(truth), **estimate,
                     "standard_error": estimate.get("standard_error"),
                     "error": None if value is None else round((value - truth) / truth, 4),
                     "covers": None if low is None else low <= truth <= high}
    if result.get("shares"):
        clients = after.get("clients") or {}
        total = sum(clients.values())
        row["shares"] = {**result["shares"], "clients_truth": {
            name: round(n / total, 4) for name, n in clients.items()} if total else {}}
    return row


def summarise(rows: list[dict]) -> list[dict]:
    rows = [row for row in rows if "zones" in row]
    summary = []
    for zones in sorted({row["zones"] for row in rows}):
        chosen = [row for row in rows if row["zones"] == zones]
        line = {"zones": zones, "runs": len(chosen),
                "median_queries": statistics.median(r["queries"] for r in chosen),
                "median_seconds": round(statistics.median(r["seconds"] for r in chosen), 1)}
        for name in ("reachable", "listed"):
            errors = [r[name]["error"] for r in chosen if r[name]["error"] is not None]
            line[name] = {
                "mean_error": round(statistics.mean(errors), 4) if errors else None,
                "mean_abs_error": round(statistics.mean(abs(e) for e in errors), 4)
                if errors else None,
                "largest_abs_error": round(max(abs(e) for e in errors), 4) if errors else None,
                "within_3pc": sum(abs(e) <= 0.03 for e in errors),
                "covered": sum(bool(r[name]["covers"]) for r in chosen)}
        summary.append(line)
    return summary


def show(rows: list[dict], summary: list[dict], nodes: int) -> None:
    for row in rows:
        if "sessions" in row:
            print(json.dumps(row["sessions"]))
    rows = [row for row in rows if "zones" in row]
    print(f"zone estimates on the emulated DHT of {nodes:,} online nodes")
    print(f"{'seed':>4} {'Z':>3} {'bits':>4} {'reachable':>11} {'error':>7} {'cov':>4} "
          f"{'listed':>11} {'error':>7} {'cov':>4} {'queries':>8} {'s':>6}")
    for r in rows:
        a, b = r["reachable"], r["listed"]
        print(f"{r['seed']:>4} {r['zones']:>3} {r['bits']:>4} {a['truth']:>11,} "
              f"{a['error']:>+7.2%} {'yes' if a['covers'] else 'no':>4} {b['truth']:>11,} "
              f"{b['error']:>+7.2%} {'yes' if b['covers'] else 'no':>4} {r['queries']:>8,} "
              f"{r['seconds']:>6.1f}")
    for s in summary:
        for name in ("reachable", "listed"):
            x = s[name]
            print(f"Z={s['zones']} {name}: mean error {x['mean_error']:+.2%}, mean |error| "
                  f"{x['mean_abs_error']:.2%}, largest {x['largest_abs_error']:.2%}, within "
                  f"3 % in {x['within_3pc']} of {s['runs']}, interval covered the truth in "
                  f"{x['covered']} of {s['runs']}")
        print(f"Z={s['zones']}: median {s['median_queries']:,.0f} queries, "
              f"{s['median_seconds']} s an estimate")


def main(argv=None) -> int:
    argv = in_own_namespace(list(sys.argv[1:] if argv is None else argv))
    args = parse_args(argv)
    deadline = time.time() + args.limit
    rows: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="estimate-emulated-") as folder:
            if args.keep:
                folder = args.keep
                Path(folder).mkdir(parents=True, exist_ok=True)
            for seed in args.seeds:
                rows += one_seed(args, seed, Path(folder), deadline)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"estimate_emulated: {exc}", file=sys.stderr)
        if not rows:
            return 2
    summary = summarise(rows)
    if args.json:
        print(json.dumps({"nodes": args.nodes, "runs": rows, "summary": summary}))
    else:
        show(rows, summary, args.nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
