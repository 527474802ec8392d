"""The `mldht` command line: get-peers, announce, ping, find-node and serve."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from typing import Sequence

from . import __version__
from .compact import format_address, parse_host_port
from .config import DEFAULT_BOOTSTRAP
from .errors import InvalidInput, MldhtError
from .ids import NodeId, parse_infohash
from .node import DHTNode, LookupSummary

EXIT_FOUND = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2

log = logging.getLogger("mldht")


class _Parser(argparse.ArgumentParser):
    """Reports bad input as one line and exit status 2, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _bootstrap_list(values: list[str] | None) -> list[str] | None:
    """Repeated --bootstrap flags and comma-separated lists; None when none was given."""
    if not values:
        return None
    entries = [item.strip() for value in values for item in value.split(",") if item.strip()]
    for entry in entries:
        parse_host_port(entry)  # raises InvalidInput with a one-line message
    return entries


def _add_network_options(parser: argparse.ArgumentParser, timeout: float) -> None:
    parser.add_argument("--bootstrap", action="append", metavar="HOST:PORT",
                        help="node to join through (repeatable, or comma-separated); "
                             "replaces the default routers: " + ", ".join(DEFAULT_BOOTSTRAP))
    parser.add_argument("--bind", default="0.0.0.0:0", metavar="IP:PORT",
                        help="local UDP address (default: any address, a free port)")
    parser.add_argument("--timeout", type=float, default=timeout, metavar="S",
                        help=f"give up after S seconds (default {timeout:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mldht", description="BitTorrent Mainline DHT (BEP 5) node and tools.")
    parser.add_argument("--version", action="version", version=f"mldht {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more to stderr (-v: info, -vv: debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    get_peers = commands.add_parser("get-peers", help="print the peers of a swarm as they are found")
    get_peers.add_argument("infohash", help="40 hex digits, 32 base32 characters or a magnet link")
    _add_network_options(get_peers, 30.0)
    get_peers.add_argument("--json", action="store_true",
                           help="JSON lines: one object per peer, then a summary object")

    announce = commands.add_parser("announce", help="announce a peer for an infohash")
    announce.add_argument("infohash")
    port = announce.add_mutually_exclusive_group(required=True)
    port.add_argument("--port", type=int, metavar="P", help="TCP port of the announced peer")
    port.add_argument("--implied-port", action="store_true",
                      help="announce the UDP source port of this command instead (BEP 5 implied_port)")
    _add_network_options(announce, 30.0)
    announce.add_argument("--json", action="store_true")

    ping = commands.add_parser("ping", help="ping one node and print its id")
    ping.add_argument("address", metavar="HOST:PORT")
    ping.add_argument("--bind", default="0.0.0.0:0", metavar="IP:PORT")
    ping.add_argument("--timeout", type=float, default=5.0, metavar="S")
    ping.add_argument("--json", action="store_true")

    find_node = commands.add_parser("find-node", help="print the nodes closest to an id")
    find_node.add_argument("node_id", metavar="ID", help="40 hex digits")
    _add_network_options(find_node, 30.0)
    find_node.add_argument("--json", action="store_true")

    serve = commands.add_parser("serve", help="run a full node in the foreground until SIGINT/SIGTERM")
    serve.add_argument("--bind", default="0.0.0.0:6881", metavar="IP:PORT",
                       help="UDP address to listen on (default 0.0.0.0:6881)")
    serve.add_argument("--bootstrap", action="append", metavar="HOST:PORT",
                       help="node to join through (repeatable, or comma-separated)")
    serve.add_argument("--state", metavar="FILE", help="keep the node id and good nodes here")
    serve.add_argument("--stats-interval", type=float, default=60.0, metavar="S",
                       help="log counters every S seconds (default 60)")
    return parser


def _summary_dict(summary: LookupSummary) -> dict:
    return {
        "target": summary.target.hex(),
        "elapsed": round(summary.elapsed, 3),
        "time_to_first_peer": None if summary.time_to_first_peer is None
        else round(summary.time_to_first_peer, 3),
        "queried": summary.queried,
        "answered": summary.answered,
        "timed_out": summary.timed_out,
        "peers": summary.peers,
    }


def _print(text: str, stream=sys.stdout) -> None:
    print(text, file=stream, flush=True)


async def _joined_node(args, read_only: bool) -> tuple[DHTNode, float]:
    """Start and bootstrap a node; returns it with the time left before --timeout."""
    started = time.monotonic()
    node = DHTNode(parse_host_port(args.bind, allow_any_port=True), bootstrap=_bootstrap_list(args.bootstrap),
                   read_only=read_only)
    await node.start()
    await node.bootstrap(timeout=args.timeout / 2)
    return node, max(args.timeout - (time.monotonic() - started), 1.0)


async def _get_peers(args) -> int:
    info_hash = parse_infohash(args.infohash)
    node, remaining = await _joined_node(args, read_only=True)
    async with node:
        lookup = node.get_peers(info_hash, timeout=remaining)
        async for ip, port in lookup:
            if args.json:
                _print(json.dumps({"type": "peer", "ip": ip, "port": port}))
            else:
                _print(format_address((ip, port)))
        summary = lookup.summary
    assert summary is not None
    if args.json:
        _print(json.dumps({"type": "summary", **_summary_dict(summary)}))
    else:
        first = ("no peer" if summary.time_to_first_peer is None
                 else f"first after {summary.time_to_first_peer:.3f} s")
        _print(f"{summary.peers} distinct peers in {summary.elapsed:.3f} s ({first}); nodes "
               f"queried {summary.queried}, answered {summary.answered}, "
               f"timed out {summary.timed_out}", sys.stderr)
    return EXIT_FOUND if summary.peers else EXIT_NOT_FOUND


async def _announce(args) -> int:
    info_hash = parse_infohash(args.infohash)
    if args.port is not None and not 0 < args.port <= 0xFFFF:
        raise InvalidInput(f"--port {args.port} is not a port from 1 to 65535")
    node, remaining = await _joined_node(args, read_only=True)
    async with node:
        result = await node.announce(info_hash, args.port, implied_port=args.implied_port,
                                     timeout=remaining)
    if args.json:
        _print(json.dumps({"announced_to": [str(n) for n in result.announced_to],
                           "failed": result.failed, **_summary_dict(result.summary)}))
    else:
        for accepted in result.announced_to:
            _print(f"announced to {format_address(accepted.address)} ({accepted.id.hex()})")
        _print(f"announced to {len(result.announced_to)} of the closest nodes "
               f"({result.failed} failed) in {result.summary.elapsed:.3f} s", sys.stderr)
    return EXIT_FOUND if result.announced_to else EXIT_NOT_FOUND


async def _ping(args) -> int:
    address = parse_host_port(args.address)
    async with DHTNode(parse_host_port(args.bind, allow_any_port=True), bootstrap=[], read_only=True) as node:
        started = time.monotonic()
        try:
            node_id = await node.ping(address, timeout=args.timeout)
        except MldhtError as exc:
            _print(f"mldht: {exc}", sys.stderr)
            return EXIT_NOT_FOUND
        rtt = (time.monotonic() - started) * 1000
    if args.json:
        _print(json.dumps({"id": node_id.hex(), "rtt_ms": round(rtt, 2)}))
    else:
        _print(f"{node_id.hex()} {format_address(address)} {rtt:.1f} ms")
    return EXIT_FOUND


async def _find_node(args) -> int:
    target = NodeId.from_hex(args.node_id)
    node, remaining = await _joined_node(args, read_only=True)
    async with node:
        summary = await node.find_node_lookup(target, timeout=remaining)
    for found in summary.closest:
        if args.json:
            _print(json.dumps({"id": found.id.hex(), "ip": found.ip, "port": found.port,
                               "distance_bits": found.id.distance(target).bit_length()}))
        else:
            _print(f"{found.id.hex()} {format_address(found.address)}")
    return EXIT_FOUND if summary.closest else EXIT_NOT_FOUND


async def _serve(args) -> int:
    bootstrap = _bootstrap_list(args.bootstrap)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with DHTNode(parse_host_port(args.bind, allow_any_port=True), bootstrap=bootstrap,
                           state_file=args.state) as node:
            log.warning("serving as %s on %s", node.node_id.hex(), format_address(node.address))
            joining = asyncio.create_task(node.bootstrap())
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.stats_interval):
                        await stop.wait()
                counts = node.routing_table.counts(time.monotonic())
                log.info("table %s, stored infohashes %d, stats %s", counts,
                         len(node.peer_store), node.stats)
            log.warning("stopping")
            joining.cancel()
            with contextlib.suppress(asyncio.CancelledError, MldhtError):
                await joining
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0


COMMANDS = {"get-peers": _get_peers, "announce": _announce, "ping": _ping,
            "find-node": _find_node, "serve": _serve}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * args.verbose if args.command != "serve" else logging.INFO - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except InvalidInput as exc:
        print(f"mldht: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"mldht: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
