"""The `mldht` command line: get-peers, announce, put, get, ping, sample, find-node, serve
and replay."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__
from .compact import format_address, parse_host_port
from .bep44 import MAX_SALT_BYTES, Item, KeyPair, bencode as bencode_value, mutable_target
from .bep51 import InvalidSample
from .blocklist import Blocklist
from .config import DEFAULT_BOOTSTRAP, NodeConfig, load_config_file, parse_override
from .errors import InvalidInput, JoinFailed, MldhtError
from .ids import NodeId
from .magnet import parse_infohash
from .bencoding import decode_bencode
from .engine import LookupSummary
from .node import Node, ipv6_available
from .state import check_state_path

EXIT_FOUND = 0
"""A lookup found what it looked for (peers, an item, nodes, nodes that took the value)."""
EXIT_NOT_FOUND = 1
"""The DHT was joined but the lookup found nothing."""
EXIT_BAD_INPUT = 2
"""Bad input: an argument, a file, an address that cannot be bound."""
EXIT_JOIN_FAILED = 3
"""Could not join the DHT: no bootstrap node or saved node answered, or none could be
resolved."""

log = logging.getLogger("mldht")


class _Parser(argparse.ArgumentParser):
    """Reports bad input as one line and exit status 2, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"mldht: error: {message}\n")


def _bootstrap_list(values: list[str] | None) -> list[str] | None:
    """Repeated --bootstrap flags and comma-separated lists; None when none was given.
    An empty entry ('', 'a:1,,b:2', a trailing comma) is an error, not 'no bootstrap'."""
    if values is None:
        return None
    entries = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                raise InvalidInput(f"--bootstrap {value!r}: empty entry (give HOST:PORT, "
                                   "several separated by commas)")
            parse_host_port(item)  # raises InvalidInput with a one-line message
            entries.append(item.strip())
    return entries


def _positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.toml",
                        help="NodeConfig fields from a TOML file: NAME = VALUE lines at the top "
                             "level or under a [node] table")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                        help="set a NodeConfig field, after --config (repeatable), e.g. "
                             "--set inbound_rate=0 --set enforce_node_id=true")


def _node_config(args) -> NodeConfig:
    """NodeConfig: the defaults, then --config FILE, then each --set in order."""
    overrides: dict = {}
    if getattr(args, "config", None):
        overrides.update(load_config_file(args.config))
    for item in getattr(args, "set", None) or []:
        try:
            name, value = parse_override(item)
        except InvalidInput as exc:
            raise InvalidInput(f"--set {item!r}: {exc}") from None
        overrides[name] = value
    return NodeConfig.from_overrides(overrides)


def _add_network_options(parser: argparse.ArgumentParser, timeout: float) -> None:
    parser.add_argument("--bootstrap", action="append", metavar="HOST:PORT",
                        help="node to join through (repeatable, or comma-separated); "
                             "replaces the default routers: " + ", ".join(DEFAULT_BOOTSTRAP))
    parser.add_argument("--bind", action="append", metavar="IP:PORT",
                        help="local UDP address; give one IPv4 and one IPv6 address for both "
                             "families (default: any IPv4 address, plus any IPv6 address when "
                             "a bootstrap node is IPv6; free ports)")
    parser.add_argument("--timeout", type=_positive_seconds, default=timeout, metavar="S",
                        help=f"give up after S seconds (default {timeout:g})")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache", metavar="FILE",
                       help="start from the nodes kept in FILE and keep the good ones there "
                            "(default: nodes.json in the user's cache folder, "
                            "the platform's: ~/.cache/mldht on Linux; one file per "
                            "--bootstrap set)")
    cache.add_argument("--no-cache", action="store_true",
                       help="neither read nor write a node cache")
    _add_blocklist_option(parser)
    _add_config_options(parser)


def _cache_folder() -> Path:
    import platformdirs  # the platform's convention: ~/.cache/mldht, ~/Library/Caches/mldht...
    return Path(platformdirs.user_cache_dir("mldht", appauthor=False))


def _cache_path(args, bootstrap: list[str] | None) -> str | None:
    """Where this command keeps its nodes between runs, or None (with a one-line warning
    when a cache was wanted but cannot be used). Each set of --bootstrap nodes has a file
    of its own: nodes of a private or test network never seed a lookup on the public DHT,
    nor the other way round."""
    if args.no_cache:
        return None
    if args.cache:
        path = Path(args.cache)
    else:
        name = "nodes.json"
        if bootstrap is not None:
            key = ",".join(sorted(bootstrap)).encode()
            name = f"nodes-{hashlib.sha256(key).hexdigest()[:12]}.json"
        path = _cache_folder() / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("no node cache: %s", _os_error_text(exc))
            return None
    try:
        check_state_path(path)
    except InvalidInput as exc:
        log.warning("no node cache: %s", str(exc).replace("state file", "cache", 1))
        return None
    return str(path)


def _add_blocklist_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blocklist", metavar="FILE",
                        help="ignore and never contact the IP ranges listed in FILE (CIDR, "
                             "first-last or PeerGuardian lines)")


def _blocklist(args) -> Blocklist | None:
    return Blocklist.from_file(args.blocklist) if getattr(args, "blocklist", None) else None


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
    get_peers.add_argument("--scrape", action="store_true",
                           help="also estimate seeds and peers from the nodes' BEP 33 filters")

    announce = commands.add_parser("announce", help="announce a peer for an infohash")
    announce.add_argument("infohash")
    port = announce.add_mutually_exclusive_group(required=True)
    port.add_argument("--port", type=int, metavar="P", help="TCP port of the announced peer")
    port.add_argument("--implied-port", action="store_true",
                      help="announce the UDP source port of this command instead (BEP 5 implied_port)")
    announce.add_argument("--seed", action="store_true", help="announce as a seed (BEP 33)")
    _add_network_options(announce, 30.0)
    announce.add_argument("--json", action="store_true")

    put = commands.add_parser(
        "put", help="store a value in the DHT (BEP 44): immutable, or mutable with --key")
    put.add_argument("value", help="the value: a UTF-8 string (or bencode with --bencoded)")
    put.add_argument("--bencoded", action="store_true",
                     help="VALUE is already bencoded (e.g. 'li1ei2ee' for a list)")
    put.add_argument("--key", metavar="FILE",
                     help="put a mutable item signed with the ed25519 seed in FILE (64 hex "
                          "digits; a new key is written there when FILE does not exist)")
    put.add_argument("--salt", metavar="S", help="salt of the mutable item (UTF-8, at most "
                     f"{MAX_SALT_BYTES} bytes)")
    put.add_argument("--seq", type=int, metavar="N",
                     help="sequence number (default: one more than the highest found)")
    put.add_argument("--cas", type=int, metavar="N",
                     help="only replace the item whose sequence number is N")
    _add_network_options(put, 30.0)
    put.add_argument("--json", action="store_true")

    get = commands.add_parser("get", help="fetch a value from the DHT (BEP 44) and verify it")
    get.add_argument("target", metavar="TARGET",
                     help="40 hex digits (the item's target), or a mutable item's 64-hex-digit "
                          "public key")
    get.add_argument("--salt", metavar="S", help="salt the mutable item was put with")
    _add_network_options(get, 30.0)
    get.add_argument("--json", action="store_true")

    ping = commands.add_parser("ping", help="ping one node and print its id")
    ping.add_argument("address", metavar="HOST:PORT")
    ping.add_argument("--bind", default="0.0.0.0:0", metavar="IP:PORT")
    ping.add_argument("--timeout", type=_positive_seconds, default=5.0, metavar="S")
    ping.add_argument("--json", action="store_true")

    sample = commands.add_parser(
        "sample", help="ask one node for a sample of the infohashes it stores (BEP 51)")
    sample.add_argument("address", metavar="HOST:PORT")
    sample.add_argument("--target", metavar="ID", help="40 hex digits: also return the node's "
                        "nodes closest to this id (default: random)")
    sample.add_argument("--bind", default="0.0.0.0:0", metavar="IP:PORT")
    sample.add_argument("--timeout", type=_positive_seconds, default=5.0, metavar="S")
    sample.add_argument("--json", action="store_true")

    find_node = commands.add_parser("find-node", help="print the nodes closest to an id")
    find_node.add_argument("node_id", metavar="ID", help="40 hex digits")
    _add_network_options(find_node, 30.0)
    find_node.add_argument("--json", action="store_true")

    serve = commands.add_parser("serve", help="run a full node in the foreground until SIGINT/SIGTERM")
    serve.add_argument("--bind", action="append", metavar="IP:PORT",
                       help="UDP address to listen on (default 0.0.0.0:6881); repeat with an "
                            "IPv6 address, e.g. --bind [::]:6881, for a dual-stack node (BEP 32)")
    serve.add_argument("--bootstrap", action="append", metavar="HOST:PORT",
                       help="node to join through (repeatable, or comma-separated)")
    serve.add_argument("--state", metavar="FILE",
                       help="keep the node id and good nodes here (checked at start: its folder "
                            "must exist and be writable; a damaged file is kept aside as "
                            "FILE.damaged-TIME and the node starts afresh)")
    serve.add_argument("--stats-interval", type=_positive_seconds, default=60.0, metavar="S",
                       help="log a status line every S seconds (default 60)")
    serve.add_argument("--http", metavar="IP:PORT",
                       help="serve the status page, JSON API and /metrics on this TCP address "
                            "(loopback unless --http-token is given), e.g. 127.0.0.1:8080")
    token = serve.add_mutually_exclusive_group()
    token.add_argument("--http-token", metavar="TOKEN",
                       help="bearer token every HTTP request must carry (required for a "
                            "non-loopback --http); the page takes it once as /?token=TOKEN")
    token.add_argument("--http-token-file", metavar="FILE",
                       help="read the token from FILE (its first line), so that it is not in "
                            "the process list")
    serve.add_argument("--http-allow-host", action="append", metavar="NAME", default=[],
                       help="a host name HTTP requests may use besides the bound address "
                            "(a reverse proxy's name); other Host headers are refused")
    _add_blocklist_option(serve)
    _add_config_options(serve)
    replay = commands.add_parser(
        "replay", help="check a packet capture of KRPC traffic and replay its queries to a node")
    replay.add_argument("capture", help="pcap or pcapng file (tcpdump -w, tshark -w)")
    replay.add_argument("--target", metavar="HOST:PORT",
                        help="node to replay the queries to (default: a fresh mldht node on "
                             "127.0.0.1 started for the purpose)")
    replay.add_argument("--bind", metavar="IP:PORT", help="local UDP address to send from")
    replay.add_argument("--rate", type=float, default=100.0, metavar="Q",
                        help="queries per second at most (default 100; a node with default "
                             "limits answers one IP about 5 per second after a burst of 50, and "
                             "libtorrent bans an IP that sends more than 50 in 10 s)")
    replay.add_argument("--limit", type=int, default=10_000, metavar="N",
                        help="replay at most N queries (default 10000)")
    replay.add_argument("--timeout", type=_positive_seconds, default=2.0, metavar="S",
                        help="seconds to wait for each reply (default 2)")
    replay.add_argument("--json", action="store_true", help="one JSON object with every finding")
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
        **({} if summary.scrape is None else {"scrape": {
            "seeds": summary.scrape.seeds, "peers": summary.scrape.peers,
            "filters": summary.scrape.filters}}),
    }


def _print(text: str, stream=sys.stdout) -> None:
    print(text, file=stream, flush=True)


def _lookup_binds(args, bootstrap: list[str] | None) -> list[str]:
    """--bind as given, or IPv4 plus IPv6 when some bootstrap node is IPv6 and we can."""
    if args.bind:
        return args.bind
    binds = ["0.0.0.0:0"]
    specs = DEFAULT_BOOTSTRAP if bootstrap is None else bootstrap
    if any(spec.startswith("[") for spec in specs) and ipv6_available():
        binds.append("[::]:0")
    return binds


def _node_for(binds: list[str], **kwargs) -> Node:
    """A node on one address, or on one of each family."""
    try:
        return Node(binds, **kwargs)
    except InvalidInput as exc:
        raise InvalidInput(f"--bind: {exc}") from None


async def _started_node(args, read_only: bool):
    """Start a node (both families when the binds allow: every operation runs on each and
    merges) with the node cache; returns it with the time left before --timeout. It does
    not join first: a one-shot command's lookup starts at once from the cache and the
    bootstrap nodes (`Node.check_reached` afterwards tells an unreachable DHT apart)."""
    started = time.monotonic()
    bootstrap = _bootstrap_list(args.bootstrap)
    binds = _lookup_binds(args, bootstrap)
    node = _node_for(binds, bootstrap=bootstrap, read_only=read_only,
                     state_file=_cache_path(args, bootstrap),
                     blocklist=_blocklist(args), config=_node_config(args))
    await node.start()
    return node, max(args.timeout - (time.monotonic() - started), 1.0)


async def _get_peers(args) -> int:
    info_hash = parse_infohash(args.infohash)
    node, remaining = await _started_node(args, read_only=True)
    async with node:
        lookup = node.get_peers(info_hash, timeout=remaining, scrape=args.scrape)
        async for ip, port in lookup:
            if args.json:
                _print(json.dumps({"type": "peer", "ip": ip, "port": port}))
            else:
                _print(format_address((ip, port)))
        summary = lookup.summary
        assert summary is not None
        node.check_reached(summary)
    if args.json:
        _print(json.dumps({"type": "summary", **_summary_dict(summary)}))
    else:
        first = ("no peer" if summary.time_to_first_peer is None
                 else f"first after {summary.time_to_first_peer:.3f} s")
        peers = f"{summary.peers} distinct peer{'' if summary.peers == 1 else 's'}"
        _print(f"{peers} in {summary.elapsed:.3f} s ({first}); nodes "
               f"queried {summary.queried}, answered {summary.answered}, "
               f"no answer {summary.timed_out}"
               + (f" ({summary.in_flight} still in flight at the end)" if summary.in_flight
                  else ""), sys.stderr)
        if summary.scrape is not None:
            _print(f"scrape (BEP 33, {summary.scrape.filters} nodes' filters): about "
                   f"{summary.scrape.seeds:.0f} seeds and {summary.scrape.peers:.0f} other peers",
                   sys.stderr)
    return EXIT_FOUND if summary.peers else EXIT_NOT_FOUND


async def _announce(args) -> int:
    info_hash = parse_infohash(args.infohash)
    if args.port is not None and not 0 < args.port <= 0xFFFF:
        raise InvalidInput(f"--port {args.port} is not a port from 1 to 65535")
    node, remaining = await _started_node(args, read_only=True)
    async with node:
        result = await node.announce(info_hash, args.port, implied_port=args.implied_port,
                                     seed=args.seed, timeout=remaining)
        node.check_reached(result.summary)
    if args.json:
        _print(json.dumps({"announced_to": [str(n) for n in result.announced_to],
                           "failed": result.failed, **_summary_dict(result.summary)}))
    else:
        for accepted in result.announced_to:
            _print(f"announced to {format_address(accepted.address)} ({accepted.id.hex()})")
        _print(f"announced to {len(result.announced_to)} of the closest nodes "
               f"({result.failed} failed) in {result.summary.elapsed:.3f} s", sys.stderr)
    return EXIT_FOUND if result.announced_to else EXIT_NOT_FOUND


def _salt(args) -> bytes:
    salt = (args.salt or "").encode()
    if len(salt) > MAX_SALT_BYTES:
        raise InvalidInput(f"--salt is {len(salt)} bytes; at most {MAX_SALT_BYTES}")
    return salt


def _value_argument(args):
    if not args.bencoded:
        return args.value.encode()
    raw = args.value.encode()
    try:
        value = decode_bencode(raw)
    except ValueError:
        raise InvalidInput("VALUE is not valid bencode (drop --bencoded to store it as a "
                           "string)") from None
    if bencode_value(value) != raw:
        raise InvalidInput("VALUE is not canonical bencode (dictionary keys must be sorted)")
    return value


def _jsonable(value):
    """A bencoded value as JSON: strings as text when UTF-8, else as {"hex": ...}."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key.decode("utf-8", "replace"): _jsonable(item) for key, item in value.items()}
    return value


def _item_dict(item: Item) -> dict:
    fields = {"target": item.target.hex(), "value": _jsonable(item.value),
              "bytes": len(item.encoded)}
    if item.is_mutable:
        assert item.public_key is not None and item.signature is not None
        fields.update(public_key=item.public_key.hex(), seq=item.seq,
                      salt=item.salt.decode("utf-8", "replace"), signature=item.signature.hex())
    return fields


async def _put(args) -> int:
    value = _value_argument(args)
    salt = _salt(args)
    if not args.key and (args.salt or args.seq is not None or args.cas is not None):
        raise InvalidInput("--salt, --seq and --cas are for mutable items: give --key FILE")
    keys = None
    if args.key:
        try:
            keys, created = KeyPair.load_or_create(args.key)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if created:
            _print(f"new key written to {args.key}; public key {keys.public_key.hex()}",
                   sys.stderr)
    if args.seq is not None and args.seq < 0:
        raise InvalidInput("--seq must not be negative")
    problem = (Item.immutable(value) if keys is None
               else Item.mutable(keys, value, args.seq or 0, salt)).problem()
    if problem is not None:
        raise InvalidInput(problem[1])
    node, remaining = await _started_node(args, read_only=True)
    async with node:
        if keys is None:
            result = await node.put_immutable(value, timeout=remaining)
        else:
            result = await node.put_mutable(keys, value, salt=salt, seq=args.seq, cas=args.cas,
                                            timeout=remaining)
        node.check_reached(result.summary)
    stored = len(result.stored_on)
    if args.json:
        _print(json.dumps({**_item_dict(result.item), "stored": stored, "asked": result.asked,
                           "errors": {str(code): n for code, n in result.errors.items()},
                           "timed_out": result.timed_out,
                           "stored_on": [str(n) for n in result.stored_on],
                           **_summary_dict(result.summary)}))
    else:
        _print(result.item.target.hex())
        kind = (f"mutable item seq {result.item.seq} of key {result.item.public_key.hex()}"
                if result.item.public_key else "immutable item")
        errors = ", ".join(f"{n} answered {code}" for code, n in sorted(result.errors.items()))
        _print(f"{kind}: stored on {stored} of the {result.asked} closest nodes"
               f"{' (' + errors + ')' if errors else ''} in {result.summary.elapsed:.3f} s",
               sys.stderr)
    return EXIT_FOUND if stored else EXIT_NOT_FOUND


async def _get(args) -> int:
    salt = _salt(args)
    text = args.target.strip().lower()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) == 32:
        target = mutable_target(raw, salt)
    elif len(raw) == 20:
        target = raw
    else:
        raise InvalidInput(f"TARGET {args.target!r} is neither 40 hex digits (a target) nor 64 "
                           "(a public key)")
    node, remaining = await _started_node(args, read_only=True)
    async with node:
        result = await node.get_item(target, salt=salt, timeout=remaining)
        node.check_reached(result.summary)
    item = result.item
    if args.json:
        _print(json.dumps({"found": item is not None, **(_item_dict(item) if item else {}),
                           "copies": result.copies, "invalid": result.invalid,
                           **_summary_dict(result.summary)}))
    elif item is not None:
        _print(item.value.decode("utf-8", "replace") if isinstance(item.value, bytes)
               else json.dumps(_jsonable(item.value)))
        kind = f"mutable item seq {item.seq}" if item.is_mutable else "immutable item"
        _print(f"{kind} ({len(item.encoded)} bytes bencoded) from {result.copies} nodes; "
               f"{result.invalid} invalid copies ignored; {result.summary.elapsed:.3f} s",
               sys.stderr)
    else:
        _print(f"not found ({result.summary.answered} nodes answered, {result.invalid} invalid "
               f"copies ignored) in {result.summary.elapsed:.3f} s", sys.stderr)
    return EXIT_FOUND if item is not None else EXIT_NOT_FOUND


async def _ping(args) -> int:
    address = parse_host_port(args.address)
    async with Node(parse_host_port(args.bind, allow_any_port=True), bootstrap=[], read_only=True) as node:
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


async def _sample(args) -> int:
    address = parse_host_port(args.address)
    target = NodeId.from_hex(args.target) if args.target else None
    bind = parse_host_port(args.bind, allow_any_port=True)
    async with Node(bind, bootstrap=[], read_only=True) as node:
        try:
            sample = await node.sample_infohashes(address, target, timeout=args.timeout)
        except (MldhtError, InvalidSample) as exc:
            _print(f"mldht: {exc}", sys.stderr)
            return EXIT_NOT_FOUND
    if args.json:
        _print(json.dumps({"samples": [h.hex() for h in sample.samples], "num": sample.num,
                           "interval": sample.interval,
                           "nodes": [{"id": n.id.hex(), "ip": n.ip, "port": n.port}
                                     for n in sample.nodes + sample.nodes6]}))
    else:
        for info_hash in sample.samples:
            _print(info_hash.hex())
        _print(f"{len(sample.samples)} samples of {sample.num} stored infohashes; ask again in "
               f"{sample.interval} s; {len(sample.nodes) + len(sample.nodes6)} nodes returned",
               sys.stderr)
    return EXIT_FOUND


async def _find_node(args) -> int:
    target = NodeId.from_hex(args.node_id)
    node, remaining = await _started_node(args, read_only=True)
    async with node:
        summary = await node.find_node_lookup(target, timeout=remaining)
        node.check_reached(summary)
    for found in summary.closest:
        if args.json:
            _print(json.dumps({"id": found.id.hex(), "ip": found.ip, "port": found.port,
                               "distance_bits": found.id.distance(target).bit_length()}))
        else:
            _print(f"{found.id.hex()} {format_address(found.address)}")
    return EXIT_FOUND if summary.closest else EXIT_NOT_FOUND


def status_line(status: dict) -> str:
    """One readable line from `Node.status()`: the routing tables, the stores, the queries
    in and out, timeouts and datagrams dropped by the inbound rate limit."""
    families = status["families"]
    tables = []
    for name, family in families.items():
        table = family["table"]
        label = "" if len(families) == 1 else ("IPv6 " if name == "ipv6" else "IPv4 ")
        tables.append(f"{label}{table['nodes']} nodes ({table['good']} good)")
    counters, stores = status["counters"], status["stores"]
    queries_in = sum(counters["queries_received"].values())
    return (f"{'table' if len(tables) == 1 else 'tables'} {', '.join(tables)}, "
            f"stored {stores['infohashes']} infohashes / {stores['peers']} peers / "
            f"{stores['items']} items, in {queries_in} q / out {counters['queries_sent']} q, "
            f"timeouts {counters['timeouts']}, rate-limited {counters['rate_limited']}")


def _changed_fields(config: NodeConfig) -> dict:
    default = NodeConfig()
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(NodeConfig)
            if getattr(config, f.name) != getattr(default, f.name)}


def _log_join(task: asyncio.Task) -> None:
    if task.cancelled():
        return
    problem = task.exception()
    if isinstance(problem, JoinFailed):
        log.warning("%s; serving anyway (nodes that contact this one will fill its table)",
                    problem)
    elif problem is not None:
        log.warning("bootstrap failed: %s", problem)


def _web_settings(args):
    """The --http options checked (InvalidInput, exit 2) before any socket opens; None
    without --http."""
    if not args.http:
        if args.http_token or args.http_token_file or args.http_allow_host:
            raise InvalidInput("--http-token, --http-token-file and --http-allow-host need --http")
        return None
    try:
        from .web import WebSettings
    except ImportError as exc:  # aiohttp or prometheus_client missing from this install
        raise InvalidInput(f"--http needs aiohttp and prometheus_client ({exc})") from None
    host, port = parse_host_port(args.http, allow_any_port=True)
    token = args.http_token
    if args.http_token_file:
        try:
            with open(args.http_token_file, encoding="utf-8") as handle:
                token = handle.readline().strip()
        except OSError as exc:
            raise InvalidInput(f"--http-token-file {args.http_token_file}: "
                               f"{exc.strerror or exc}") from None
    if token is not None and (len(token) < 16 or not token.isprintable()):
        raise InvalidInput("the HTTP token must be at least 16 printable characters")
    settings = WebSettings(host=host, port=port, token=token,
                           allowed_hosts=tuple(args.http_allow_host))
    try:
        settings.check_bind()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return settings


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve(args) -> int:
    bootstrap = _bootstrap_list(args.bootstrap)
    config = _node_config(args)
    if args.state:
        check_state_path(args.state)  # InvalidInput naming the path, before any socket
    web_settings = _web_settings(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        # OSError naming the address for a port in use.
        server = _node_for(args.bind or ["0.0.0.0:6881"], bootstrap=bootstrap,
                           state_file=args.state, blocklist=_blocklist(args), config=config)
        async with server:
            log.info("event loop: %s.%s", type(loop).__module__, type(loop).__name__)
            changed = _changed_fields(config)
            if changed:
                log.info("config: %s", ", ".join(f"{name}={value!r}"
                                                 for name, value in changed.items()))
            for name, node_id in server.node_ids.items():
                log.info("serving as %s on %s", node_id.hex(),
                         format_address(server.address_of(name)))
            web_runner = None
            if web_settings is not None:
                from .web import node_app, start_server
                # OSError naming the address for a port in use, before the node joins.
                web_runner = await start_server(node_app(server, web_settings), web_settings)
                log.info("status page on http://%s:%d/", _url_host(web_settings.host),
                         web_settings.port)
            joining = asyncio.create_task(server.bootstrap())
            joining.add_done_callback(_log_join)
            try:
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(args.stats_interval):
                            await stop.wait()
                    log.info("%s", status_line(server.status()))
                log.info("stopping")
            finally:
                joining.cancel()
                with contextlib.suppress(asyncio.CancelledError, MldhtError):
                    await joining
                if web_runner is not None:
                    await web_runner.cleanup()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0


async def _replay(args) -> int:
    # Imported here: the pcap parser is only needed by this command.
    from .capture import read_datagrams
    from .replay import analyze, describe, exchange_label, replay

    if args.rate <= 0 or args.limit < 0 or args.timeout <= 0:
        raise InvalidInput("--rate and --timeout must be positive and --limit not negative")
    analysis = analyze(read_datagrams(args.capture))
    own_node = None
    if args.target:
        target = parse_host_port(args.target)
    else:
        # A throwaway target: no per-IP or reply limits, every query is one source's.
        own_node = Node(("127.0.0.1", 0), bootstrap=[],
                           config=NodeConfig(inbound_rate=0, reply_bytes_per_second=0))
        await own_node.start()
        target = own_node.address
    try:
        bind = parse_host_port(args.bind, allow_any_port=True) if args.bind else None
        results = await replay(analysis.exchanges, target, bind=bind, timeout=args.timeout,
                               rate=args.rate, limit=args.limit)
    finally:
        if own_node is not None:
            await own_node.close()
    problems = [r for r in results if r.problem]
    differences = [r for r in results if r.difference]
    if args.json:
        _print(json.dumps({
            "datagrams": len(analysis.messages), "messages": analysis.counts(),
            "queries": analysis.methods(), "clients": dict(analysis.clients),
            "unpaired_replies": analysis.unpaired_replies,
            "undecodable": [{"index": m.index, "from": format_address(m.datagram.source),
                             "problem": m.problem} for m in analysis.undecodable],
            "capture_reply_problems": [{"exchange": exchange_label(e), "problem": p}
                                       for e, p in analysis.reply_problems],
            "encoding_problems": [{"index": m.index, "problem": p}
                                  for m, p in analysis.encoding_problems],
            "target": format_address(target), "replayed": len(results),
            "answered": sum(r.reply is not None for r in results),
            "problems": [{"exchange": exchange_label(r.exchange), "problem": r.problem,
                          "reply": describe(r.reply)} for r in problems],
            "differences": [{"exchange": exchange_label(r.exchange), "difference": r.difference}
                            for r in differences],
        }))
    else:
        clients = ", ".join(f"{name!r} {count}" for name, count in analysis.clients.most_common())
        _print(f"capture: {len(analysis.messages)} UDP datagrams: {analysis.counts()}; "
               f"clients (v) {clients or 'none'}")
        _print(f"queries: {analysis.methods()}; replies not matching a query: "
               f"{analysis.unpaired_replies}")
        for captured in analysis.undecodable:
            _print(f"undecodable #{captured.index} from {format_address(captured.datagram.source)}: "
                   f"{captured.problem}")
        for exchange, problem in analysis.reply_problems:
            _print(f"captured reply problem: {exchange_label(exchange)}: {problem}")
        for captured, problem in analysis.encoding_problems:
            _print(f"encoding problem #{captured.index}: {problem}")
        who = "a fresh mldht node" if own_node is not None else "the target"
        _print(f"replayed {len(results)} queries to {format_address(target)} ({who}): "
               f"{sum(r.reply is not None for r in results)} answered, {len(problems)} problems, "
               f"{len(differences)} differences from the capture")
        for result in problems:
            _print(f"problem: {exchange_label(result.exchange)}: {result.problem}")
        for result in differences:
            _print(f"difference: {exchange_label(result.exchange)}: {result.difference}")
    return EXIT_NOT_FOUND if problems else EXIT_FOUND


COMMANDS = {"get-peers": _get_peers, "announce": _announce, "put": _put, "get": _get, "ping": _ping,
            "find-node": _find_node, "serve": _serve, "replay": _replay, "sample": _sample}


def _run(coroutine):
    """asyncio.run, on uvloop when it is installed (a dependency where it has wheels: it serves
    about 1.5x more queries per second), unless MLDHT_EVENT_LOOP=asyncio."""
    choice = os.environ.get("MLDHT_EVENT_LOOP", "auto")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                coroutine.close()
                raise InvalidInput("MLDHT_EVENT_LOOP=uvloop but uvloop is not installed") from None
        else:
            return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def _error(message: object) -> None:
    print(f"mldht: error: {message}", file=sys.stderr, flush=True)


def _os_error_text(exc: OSError) -> str:
    """'cannot bind 127.0.0.1:6881: address already in use ...', 'FILE: No such file...',
    without the '[Errno N]' prefix."""
    if exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return exc.strerror or str(exc)


async def run_command(args: argparse.Namespace) -> int:
    """Run the command of parsed `args` on the running loop; returns the exit status, with
    a one-line `mldht: error: ...` on stderr for bad input (2) and a failed join (3)."""
    try:
        return await COMMANDS[args.command](args)
    except JoinFailed as exc:
        _error(exc)
        return EXIT_JOIN_FAILED
    except InvalidInput as exc:
        _error(exc)
        return EXIT_BAD_INPUT
    except OSError as exc:
        _error(_os_error_text(exc))
        return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 found, 1 none found, 2 bad input, 3 could not join the DHT (130 on
    Ctrl-C); `serve` exits 0 on SIGINT/SIGTERM."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * args.verbose if args.command != "serve" else logging.INFO - 10 * args.verbose
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(run_command(args))
    except InvalidInput as exc:
        _error(exc)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
