"""An emulated Mainline DHT: millions of virtual nodes answering on 127.0.0.0/8.

    python tools/bench/emulated_dht.py --nodes N --seed S --duration SECONDS
        [--truth FILE] [--bind-port P] [--silent F] [--loss F] [--rtt-median S] ...

A benchmark tool of the project: the crawler and the lookups measured against it are the
real code over real UDP; only the DHT around them is emulated, one process answering as
`--nodes` virtual nodes, each with its own address, id, client, round-trip time, session
schedule and a routing table computed on demand (tools/bench/emulated/model.py says how).
The defaults are the real DHT's (silent contacts, round-trip times, loss, churn, shared
IPs, Sybil clusters, the client mix, BEP 42 and BEP 51 support, libtorrent's per-IP limit),
each option's help names its figure and docs/crawler.md's table its source; `--plain` turns the
hostile parts off.

Prints `ready HOST:PORT` (a bootstrap node that answers and never leaves) on stdout once
it serves; writes the truth to `--truth` (JSON, every `--truth-every` seconds and at the
end: `nodes`, `reachable`, `reachable_ever`, `listed`, `answered`, per zone and per source
IP what arrived and was dropped); stops after `--duration` seconds, on SIGINT or SIGTERM,
or when its stdin closes with `--stdin-stop`. Answers only datagrams from 127.0.0.0/8.
Exit 0, or 2 with a one-line error.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from emulated.model import EmulatedNetwork, EmulationConfig  # noqa: E402
from emulated.server import EmulatorServer  # noqa: E402

MAX_NODES = 30_000_000

OPTION_HELP = {
    "silent": "share of online nodes that never answer a stranger (NAT, firewalled)",
    "gone": "share of listed nodes that left for good (stale entries)",
    "loss": "share of datagrams lost, each way",
    "rtt_median": "median round-trip time, seconds",
    "rtt_sigma": "log-normal spread of round-trip times",
    "rtt_tail": "share of nodes 1 to 3 s away",
    "jitter_sigma": "per-datagram spread around a node's round trip",
    "nat_share": "share of nodes on an IP shared with others (different ports and ids)",
    "nat_group_max": "most nodes on one shared IP",
    "sybil_share": "share of nodes that are Sybils, sybil_ids of them per IP",
    "sybil_ids": "ids (ports) per Sybil IP",
    "errors": "share of nodes answering every query with an error",
    "session_shape": "Weibull shape of online sessions (0: no churn)",
    "session_scale": "Weibull scale of online sessions, minutes",
    "availability": "share of the time a node is online",
    "stale_minutes": "minutes a node that left stays in others' tables",
    "bep42_from": "BEP 42 ids made for a 'public' address the emulator gives each IP (spread "
                  "evenly, as on the real DHT) or for the 'loopback' one the crawler sees",
    "swing": "daily swing of the online population, a share of its mean (0.28: the public "
             "DHT's 15 to 27 million)",
    "swing_period": "seconds of one swing (3600: a day compressed into an hour)",
    "sample_interval": "BEP 51 interval, seconds",
    "num_median": "median infohashes stored (BEP 51 num)",
    "swarms": "infohashes with peers on their 8 closest answering nodes (listed in the "
              "truth's `swarms`)",
    "swarm_peers": "peers each swarm's nodes return",
    "per_ip_limit": "datagrams a second from one IP before a node ignores it (0: none)",
    "per_ip_window": "seconds the per-IP rate is averaged over",
    "per_ip_ban": "seconds of quiet before an ignored IP is heard again",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emulated_dht.py", description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, required=True, metavar="N",
                        help="virtual nodes online at once")
    parser.add_argument("--seed", type=int, default=1, metavar="S")
    parser.add_argument("--duration", type=float, required=True, metavar="SECONDS",
                        help="stop after this long (a bound on every run)")
    parser.add_argument("--truth", metavar="FILE", help="where to write the truth (JSON)")
    parser.add_argument("--truth-every", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--bind-port", type=int, default=20000, metavar="P",
                        help="first UDP port (default 20000); more follow where needed")
    parser.add_argument("--plain", action="store_true",
                        help="a well-behaved network: no silence, loss, delay, churn, "
                             "shared IPs, Sybils or errors (options given still apply)")
    parser.add_argument("--stdin-stop", action="store_true",
                        help="stop when stdin closes (for a parent process)")
    defaults = EmulationConfig()
    for item in fields(EmulationConfig):
        if item.name not in OPTION_HELP:
            continue
        default = getattr(defaults, item.name)
        parser.add_argument("--" + item.name.replace("_", "-"), type=type(default),
                            default=None, metavar="X",
                            help=f"{OPTION_HELP[item.name]} (default {default})")
    return parser


def config_from(args) -> EmulationConfig:
    if not 16 <= args.nodes <= MAX_NODES:
        raise ValueError(f"--nodes must be from 16 to {MAX_NODES:,}")
    if args.duration <= 0:
        raise ValueError("--duration must be positive")
    overrides = {name: getattr(args, name) for name in OPTION_HELP
                 if getattr(args, name) is not None}
    for name in ("silent", "gone", "loss", "rtt_tail", "nat_share", "errors", "sybil_share"):
        if name in overrides and not 0.0 <= overrides[name] <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be from 0 to 1")
    if "availability" in overrides and not 0.0 < overrides["availability"] <= 1.0:
        raise ValueError("--availability must be above 0 and at most 1")
    common = dict(nodes=args.nodes, seed=args.seed, base_port=args.bind_port, **overrides)
    return EmulationConfig.plain(**common) if args.plain else EmulationConfig(**common)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
        started = time.monotonic()
        network = EmulatedNetwork(config)
        server = EmulatorServer(network, truth_path=args.truth, truth_every=args.truth_every,
                                seed=args.seed)
        server.open()
    except (ValueError, OSError, MemoryError) as exc:
        print(f"emulated_dht: error: {exc}", file=sys.stderr)
        return 2
    print(f"emulated_dht: {network.population:,} virtual nodes ({config.nodes:,} online) "
          f"on {network.ports} ports from {config.base_port}, built in "
          f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.stop())
    if args.stdin_stop:
        def watch() -> None:
            sys.stdin.read()
            server.stop()
        threading.Thread(target=watch, daemon=True).start()
    print(f"ready {server.bootstrap_address()}", flush=True)
    try:
        server.serve(args.duration)
    finally:
        server.close()
    counts = server.counts
    print(f"emulated_dht: received {counts['received']:,}, answered {counts['answered']:,}, "
          f"sent {counts['sent']:,}, rate-limited {counts['rate_limited']:,}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
