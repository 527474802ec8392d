"""Simulate thousands of real mldht nodes on a virtual network and clock; print a report.

    python tools/simulate.py --nodes 2000 --lookups 500 --loss 0.05 --dead 0.2 --seed 3
    python tools/simulate.py --nodes 10000 --lookups 1000 --preset kademlia --json

Every node is a real `DHTNode` (lookups, routing table, verification pings, timeouts) on a
virtual-time event loop; datagrams travel through a simulated network with per-link
latency, loss, NAT, dead and departing nodes and optional Sybils. No socket is opened and
nothing is sent anywhere. The same options and seed give the same report; wall time and
peak RSS are printed apart. See `mldht.sim` for the phases and the success criteria.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace

from mldht import InvalidInput, NodeConfig
from mldht.config import parse_override
from mldht.sim import Scenario, format_report, run_scenario
from mldht.sim.scenario import LEGACY_IDS
from mldht.sim.sybil import STRATEGIES

PRESETS: dict[str, dict] = {
    "mldht": {},
    "libtorrent": {"alpha": 5, "soft_timeout": 1.0, "adaptive_soft_timeout": False,
                   "lookup_waits_for_slow": True, "lookup_resends": False,
                   "aggressive_lookups": True},
    "kademlia": {"alpha": 3, "soft_timeout": NodeConfig().query_timeout,
                 "adaptive_soft_timeout": False, "lookup_waits_for_slow": True,
                 "lookup_resends": False, "aggressive_lookups": False,
                 "prefer_fast_nodes": False},
    "eager": {"alpha": 8, "soft_timeout": 0.5},
}
"""Named NodeConfig overrides: `mldht` is the defaults; `libtorrent` its traversal (5 in
flight at the top of the list, a fixed 1 s soft timeout, the end of a lookup waits for every
closer query still out, no second send); `kademlia` the paper's (3 in flight, no soft timeout: a slot is held until the hard
timeout); `eager` more parallel and less patient."""

AUTO_SEEDED_ABOVE = 2000
"""With `--bootstrap auto`, larger networks get seeded tables (a real join costs each node
some 300 queries)."""


def build_config(args: argparse.Namespace) -> NodeConfig:
    """NodeConfig from the preset, then --set, then the dedicated flags."""
    overrides = dict(PRESETS[args.preset])
    for item in args.set or []:
        try:
            name, value = parse_override(item)  # the parsing of `mldht serve --set`
        except InvalidInput as exc:
            raise SystemExit(f"--set {item!r}: {exc}") from None
        overrides[name] = value
    for name in ("alpha", "soft_timeout", "query_timeout", "k"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.enforce_node_id:
        overrides["enforce_node_id"] = True
    return replace(NodeConfig(), **overrides)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000, help="addresses at the start (default 1000)")
    p.add_argument("--lookups", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loss", type=float, default=0.0, help="datagram loss probability")
    p.add_argument("--dead", type=float, default=0.0,
                   help="fraction of honest nodes silenced after the announces")
    p.add_argument("--churn", type=float, default=0.0,
                   help="fraction of honest nodes replaced per virtual minute during lookups")
    p.add_argument("--nat", type=float, default=0.0, help="fraction of honest nodes behind NAT")
    p.add_argument("--sybil", type=float, default=0.0, help="fraction of addresses that are Sybils")
    p.add_argument("--sybil-strategy", choices=STRATEGIES, default="eclipse",
                   help="eclipse: ids right next to every target; plausible: BEP 42 ids of "
                        "their own IPs, only as close as the network's size makes believable; "
                        "poison: as eclipse, with made-up peers in get_peers replies")
    p.add_argument("--legacy-ids", type=float, default=LEGACY_IDS,
                   help=f"fraction of honest nodes whose ids are not BEP 42 ids (default "
                        f"{LEGACY_IDS}: what the emulated DHT's client mix implies)")
    p.add_argument("--latency", type=float, default=100.0,
                   help="median one-way link latency, ms (lognormal; default 100)")
    p.add_argument("--latency-sigma", type=float, default=0.5, help="lognormal shape (default 0.5)")
    p.add_argument("--bootstrap", choices=("auto", "join", "seeded"), default="auto",
                   help=f"real joins, or tables seeded from the global view (auto: seeded "
                        f"above {AUTO_SEEDED_ABOVE} nodes)")
    p.add_argument("--join-rate", type=float, default=200.0, help="joins per virtual second")
    p.add_argument("--settle", type=float, default=30.0, help="idle virtual seconds after bootstrap")
    p.add_argument("--kind", choices=("mixed", "get_peers", "find_node"), default="mixed")
    p.add_argument("--lookup-rate", type=float, default=20.0, help="lookups started per virtual second")
    p.add_argument("--swarms", type=int, default=20, help="infohashes announced")
    p.add_argument("--items", type=int, default=0,
                   help="BEP 44 immutable items put after the announces (default 0)")
    p.add_argument("--timeout", type=float, default=30.0, help="lookup timeout, virtual seconds")
    config = p.add_argument_group("node configuration")
    config.add_argument("--preset", choices=sorted(PRESETS), default="mldht")
    config.add_argument("--alpha", type=int, help="queries in flight per lookup")
    config.add_argument("--soft-timeout", type=float, help="seconds before a slow query frees its slot")
    config.add_argument("--query-timeout", type=float, help="hard timeout of one query, seconds")
    config.add_argument("--k", type=int, help="bucket size")
    config.add_argument("--enforce-node-id", action="store_true", help="BEP 42 enforcement")
    config.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="any other NodeConfig field (repeatable)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--verbose", action="store_true", help="log the phases (wall time) to stderr")
    return p


def scenario_from(args: argparse.Namespace) -> Scenario:
    bootstrap = args.bootstrap
    if bootstrap == "auto":
        bootstrap = "seeded" if args.nodes > AUTO_SEEDED_ABOVE else "join"
    return Scenario(nodes=args.nodes, lookups=args.lookups, seed=args.seed, loss=args.loss,
                    dead=args.dead, churn=args.churn, nat=args.nat, sybil=args.sybil,
                    sybil_strategy=args.sybil_strategy, legacy_ids=args.legacy_ids,
                    latency_median=args.latency / 1000, latency_sigma=args.latency_sigma,
                    bootstrap=bootstrap, join_rate=args.join_rate, settle=args.settle,
                    swarms=args.swarms, items=args.items, lookup_kind=args.kind, lookup_rate=args.lookup_rate,
                    lookup_timeout=args.timeout, config=build_config(args))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    scenario = scenario_from(args)
    try:
        scenario.validate()
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(format="%(asctime)s %(message)s", stream=sys.stderr)
        logging.getLogger("mldht.sim").setLevel(logging.INFO)
    result = run_scenario(scenario)
    if args.json:
        print(json.dumps({"report": result.report, "resources": result.resources}, indent=1))
    else:
        print(format_report(result.report, result.resources))
    return 0


if __name__ == "__main__":
    sys.exit(main())
