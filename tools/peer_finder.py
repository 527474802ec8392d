"""The infohash peer finder: the peers of many swarms, looked up from one warm DHT node.

    python tools/peer_finder.py [INFOHASH | MAGNET | FILE.torrent ...] [-i FILE | -i -]
        [-o OUT.jsonl] [--format jsonl|csv] [--bootstrap HOST:PORT ...] [--bind IP:PORT]
        [--state FILE] [--concurrency N] [--rate Q] [--per-ip-rate Q] [--timeout S]
        [--scrape] [--resume] [--serve] [--http IP:PORT]

Input: infohashes (40 hex digits, 32 base32 characters), magnet links (`urn:btih:`, and
`urn:btmh:` v2 hashes looked up by their first 20 bytes, BEP 52; `dn` kept as the name),
.torrent files (v1, hybrid, v2), given as arguments or one a line with `-i FILE` (`-i -`:
stdin; blank lines and `#` comments skipped). A bad item is reported with where it came
from and skipped; duplicates are looked up once.

Output: one JSON object a line per infohash as its lookup completes (`--format csv` for a
spreadsheet), to `-o FILE` or stdout; progress and a summary on stderr. One node bootstraps
once and serves every lookup (read-only, BEP 43, unless `--serve`); all lookups share one
query budget: `--rate` queries a second in all and `--per-ip-rate` to any one IP (a burst
of 10 then 3 a second: at most 40 in any 10 s, under libtorrent's ban at 50).

Exit status: 0 when at least one swarm had peers, 1 when none had, 2 on bad input, 3 when
the DHT could not be joined, 130 when stopped by Ctrl-C (every line written is complete).

Built on mldht's public API only: `Node`, `get_peers_many`, `status()`, `estimated_size()`,
`mldht.magnet` and `mldht.web.progress_app`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Sequence

from mldht import Node, NodeConfig
from mldht.compact import format_address
from mldht.errors import InvalidInput, JoinFailed, MldhtError
from mldht.magnet import Torrent, parse_target, parse_torrent

PROG = "mldht-peer-finder" if __package__ else "peer_finder"
DEFAULT_CONCURRENCY = 16
DEFAULT_RATE = 200.0
DEFAULT_PER_IP_RATE = 3.0


def finder_overrides(rate: float = DEFAULT_RATE,
                     per_ip_rate: float = DEFAULT_PER_IP_RATE) -> dict:
    """The finder's NodeConfig changes. Its lookups do not race (`aggressive_lookups` off):
    many at once, they are bound by the query budget, where racing only spends queries; in
    the simulator that found 8.5 swarms a second instead of 7.2, and each first peer sooner
    (tools/bench/peer_finder_sim.py, docs/peer-finder.md)."""
    return {"query_rate": rate, "per_ip_query_rate": per_ip_rate, "aggressive_lookups": False}
DEFAULT_TIMEOUT = 30.0
PLAIN_PROGRESS_INTERVAL = 5.0
RATE_WINDOW = 10.0
"""Seconds over which the progress line's queries per second are averaged."""
CSV_FIELDS = ["infohash", "name", "peer_count", "ipv4_peers", "ipv6_peers", "seeds",
              "leechers", "time_to_first_peer", "elapsed", "queried", "answered",
              "unanswered", "error", "peers"]
EXIT_FOUND, EXIT_NONE, EXIT_BAD_INPUT, EXIT_NO_JOIN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class BadInput(Exception):
    """Nothing valid to do: exit 2 with this message."""


@dataclass(frozen=True, slots=True)
class Target:
    info_hash: bytes
    name: str | None
    origin: str
    """Where it came from ("argument 2", "list.txt line 7"), for messages."""


# --- input -----------------------------------------------------------------------------------

def parse_item(text: str) -> Torrent:
    """An infohash, magnet link or .torrent path; InvalidInput with a one-line reason."""
    text = text.strip()
    try:
        return parse_target(text)
    except InvalidInput:
        if not (text.lower().endswith(".torrent") or os.path.isfile(text)):
            raise
    try:
        data = Path(text).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {text}: {exc.strerror or exc}") from None
    return parse_torrent(data)


def read_targets(items: Sequence[str], list_files: Sequence[str], stdin: IO[str],
                 warn) -> list[Target]:
    """Every valid, distinct target of the arguments and list files, in order; each bad one
    reported through `warn(message)` with where it came from."""
    found: dict[bytes, Target] = {}

    def add(text: str, origin: str) -> None:
        try:
            torrent = parse_item(text)
        except InvalidInput as exc:
            warn(f"{origin}: {exc} (skipped)")
            return
        key = bytes(torrent.info_hash)
        if key not in found:
            found[key] = Target(key, torrent.name, origin)
        elif found[key].name is None and torrent.name:
            found[key] = Target(key, torrent.name, found[key].origin)

    for number, item in enumerate(items, 1):
        add(item, f"argument {number}")
    for path in list_files:
        label = "stdin" if path == "-" else path
        try:
            handle = stdin if path == "-" else open(path, encoding="utf-8", errors="replace")
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
        with contextlib.ExitStack() as stack:
            if handle is not stdin:
                stack.enter_context(handle)
            for number, line in enumerate(handle, 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    add(line, f"{label} line {number}")
    return list(found.values())


# --- output ----------------------------------------------------------------------------------

def record_of(target: Target, result) -> dict:
    """The output object of one finished lookup (`result`: a `PeerLookupResult`)."""
    summary = result.summary
    peers = [format_address(peer) for peer in result.peers]
    ipv6 = sum(1 for peer in result.peers if ":" in peer[0])
    scrape = summary.scrape if summary is not None else None
    return {
        "infohash": target.info_hash.hex(),
        "name": target.name,
        "peers": peers,
        "peer_count": len(peers),
        "ipv4_peers": len(peers) - ipv6,
        "ipv6_peers": ipv6,
        "seeds": None if scrape is None else round(scrape.seeds),
        "leechers": None if scrape is None else round(scrape.peers),
        "time_to_first_peer": None if summary is None or summary.time_to_first_peer is None
        else round(summary.time_to_first_peer, 3),
        "elapsed": None if summary is None else round(summary.elapsed, 3),
        "queried": None if summary is None else summary.queried,
        "answered": None if summary is None else summary.answered,
        # Not answered by the end: timed out, errored, or still out when the closest had.
        "unanswered": None if summary is None else summary.queried - summary.answered,
        "error": result.error,
    }


class RecordWriter:
    """One line per record, each written whole and flushed: an interrupted run leaves only
    complete lines (and `--resume` cuts a line a crash left half written)."""

    def __init__(self, stream: IO[str], output_format: str, header: bool) -> None:
        self.stream = stream
        self.format = output_format
        if output_format == "csv" and header:
            self._write_row(CSV_FIELDS)

    def _write_row(self, values: list) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        self.stream.write(buffer.getvalue())
        self.stream.flush()

    def write(self, record: dict) -> None:
        if self.format == "csv":
            row = dict(record, peers=" ".join(record["peers"]))
            self._write_row(["" if row[name] is None else row[name] for name in CSV_FIELDS])
        else:
            self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.stream.flush()


def done_infohashes(path: Path, output_format: str) -> set[bytes]:
    """The infohashes already in an output file (for --resume); a last line without its
    newline (a crash mid-write) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(keep)
        data = data[:keep]
    done = set()
    text = data.decode("utf-8", "replace")
    if output_format == "csv":
        rows: Iterable[list[str]] = csv.reader(io.StringIO(text))
        lines = (row[0] for row in rows if row and row[0] != "infohash")
    else:
        lines = (json.loads(line).get("infohash", "") for line in text.splitlines()
                 if line.strip().startswith("{"))
    for value in lines:
        with contextlib.suppress(ValueError):
            if len(value) == 40:
                done.add(bytes.fromhex(value))
    return done


# --- the run ---------------------------------------------------------------------------------

@dataclass
class Totals:
    """What the batch did so far (the progress line and the summary)."""

    total: int
    done: int = 0
    with_peers: int = 0
    without_peers: int = 0
    failed: int = 0
    peers_found: int = 0
    distinct_peers: set = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    queries_at_start: int = 0

    def add(self, record: dict) -> None:
        self.done += 1
        if record["error"]:
            self.failed += 1
        elif record["peers"]:
            self.with_peers += 1
        else:
            self.without_peers += 1
        self.peers_found += len(record["peers"])
        if len(self.distinct_peers) < 1_000_000:  # bounded: a count, not a store
            self.distinct_peers.update(record["peers"])

    def snapshot(self, node: Node | None, now: float | None = None) -> dict:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        queries = 0 if node is None else node.stats.queries_sent - self.queries_at_start
        rate = self.done / elapsed
        left = self.total - self.done
        return {"done": self.done, "total": self.total, "with_peers": self.with_peers,
                "without_peers": self.without_peers, "failed": self.failed,
                "peers_found": self.peers_found, "distinct_peers": len(self.distinct_peers),
                "queries_sent": queries, "queries_per_second": round(queries / elapsed, 1),
                "lookups_per_second": round(rate, 2), "elapsed": round(elapsed, 1),
                "eta_seconds": round(left / rate) if rate > 0 and left else None}


async def find(node: Node, targets: Sequence[Target], *, concurrency: int, timeout: float,
               scrape: bool, on_record, totals: Totals) -> None:
    """Look every target up on `node` (bootstrapped), at most `concurrency` at a time,
    calling `on_record(record)` as each completes."""
    by_hash = {target.info_hash: target for target in targets}
    lookups = node.get_peers_many([target.info_hash for target in targets],
                                  concurrency=concurrency, timeout=timeout, scrape=scrape)
    try:
        async for result in lookups:
            record = record_of(by_hash[bytes(result.info_hash)], result)
            totals.add(record)
            on_record(record)
    finally:
        await lookups.aclose()  # Ctrl-C: the lookups still running are cancelled


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A live bar on a terminal (rich), a plain line every few seconds otherwise."""

    def __init__(self, totals: Totals, stream: IO[str], quiet: bool) -> None:
        self.totals = totals
        self.stream = stream
        self.quiet = quiet
        self.node: Node | None = None
        self.live = stream.isatty() and not quiet
        self._bar = None
        self._task = None
        self._last_plain = time.monotonic()  # the first plain line after an interval
        self._rates: deque[tuple[float, int]] = deque(maxlen=64)

    def __enter__(self) -> "Progress":
        if self.live:
            # rich: a maintained progress renderer (redraw, terminal width, ETA), not ours.
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar
            from rich.progress import TextColumn, TimeRemainingColumn
            self._bar = Bar(TextColumn("looking up"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                            console=Console(file=self.stream), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("lookups", total=self.totals.total, detail="")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc_info)

    def update(self, force: bool = False) -> None:
        if self.quiet:
            return
        snapshot = self.totals.snapshot(self.node)
        now = time.monotonic()
        self._rates.append((now, snapshot["queries_sent"]))
        while len(self._rates) > 2 and now - self._rates[0][0] > RATE_WINDOW:
            self._rates.popleft()
        (first_at, first_count) = self._rates[0]
        if now - first_at >= 0.5:
            recent = (snapshot["queries_sent"] - first_count) / (now - first_at)
        else:  # too short a window to say: the average so far
            recent = snapshot["queries_per_second"]
        detail = (f"{snapshot['with_peers']} with peers, {snapshot['peers_found']} peers, "
                  f"{recent:.0f} q/s")
        if self._bar is not None:
            self._bar.update(self._task, completed=snapshot["done"], detail=detail)
            return
        if force or now - self._last_plain >= PLAIN_PROGRESS_INTERVAL:
            self._last_plain = now
            print(f"{PROG}: {snapshot['done']}/{snapshot['total']} done, {detail}, "
                  f"ETA {format_seconds(snapshot['eta_seconds'])}", file=self.stream,
                  flush=True)

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(0.5 if self.live else 1.0)
            self.update()


def print_summary(totals: Totals, node: Node | None, stream: IO[str],
                  interrupted: bool) -> None:
    snapshot = totals.snapshot(node)
    estimate = node.estimated_size() if node is not None else None
    size = "unknown"
    if estimate is not None and estimate.lookups:
        size = f"{estimate.size:,.0f} ± {estimate.standard_error:,.0f} ({estimate.lookups} lookups)"
    rows = [
        ("looked up", f"{snapshot['done']} of {snapshot['total']}"
                      + (" (interrupted)" if interrupted else "")),
        ("with peers", snapshot["with_peers"]),
        ("without peers", snapshot["without_peers"]),
        ("failed", snapshot["failed"]),
        ("distinct peers", snapshot["distinct_peers"]),
        ("queries sent", snapshot["queries_sent"]),
        ("lookups per second", snapshot["lookups_per_second"]),
        ("elapsed", format_seconds(snapshot["elapsed"])),
        ("estimated DHT size", size),
    ]
    from rich.console import Console
    from rich.table import Table
    table = Table(title="peer finder summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    Console(file=stream, width=max(60, min(100, _terminal_width(stream)))).print(table)


def _terminal_width(stream: IO[str]) -> int:
    with contextlib.suppress(OSError, AttributeError, ValueError):
        return os.get_terminal_size(stream.fileno()).columns
    return 80


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mldht-peer-finder" if __package__ else "peer_finder.py", description="Find the peers of many swarms on the BitTorrent "
        "DHT from one warm node, politely.",
        epilog="Exit status: 0 some swarm had peers, 1 none had, 2 bad input, 3 could not "
               "join the DHT, 130 interrupted.")
    parser.add_argument("items", nargs="*", metavar="INFOHASH|MAGNET|FILE.torrent")
    parser.add_argument("-i", "--input", action="append", default=[], metavar="FILE",
                        help="read items from FILE, one a line (- for stdin)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write results here (default stdout)")
    parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    parser.add_argument("--bootstrap", action="append", metavar="HOST:PORT",
                        help="bootstrap node (repeatable; default: the public routers)")
    parser.add_argument("--bind", default="0.0.0.0:0", metavar="IP:PORT",
                        help="local UDP address of the node (default 0.0.0.0:0)")
    parser.add_argument("--state", metavar="FILE",
                        help="keep the routing table here between runs (the next run starts "
                             "from it, without asking the routers)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                        help=f"lookups in flight (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="Q",
                        help=f"queries per second in all (default {DEFAULT_RATE:g})")
    parser.add_argument("--per-ip-rate", type=float, default=DEFAULT_PER_IP_RATE, metavar="Q",
                        help="queries per second to any one IP after a burst of 10 (default "
                             f"{DEFAULT_PER_IP_RATE:g}; at most 4.9: libtorrent bans above 5)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                        help=f"seconds per lookup (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--scrape", action="store_true",
                        help="estimate seeds and leechers (BEP 33)")
    parser.add_argument("--resume", action="store_true",
                        help="skip infohashes already in the output file and append to it")
    parser.add_argument("--serve", action="store_true",
                        help="answer queries (default: read-only, BEP 43)")
    parser.add_argument("--http", metavar="IP:PORT",
                        help="also show the progress as a live page (loopback)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    return parser


def check_options(args) -> None:
    if args.concurrency < 1:
        raise BadInput("--concurrency must be at least 1")
    if not args.rate > 0:
        raise BadInput("--rate must be positive")
    if not 0 < args.per_ip_rate < 5:
        raise BadInput("--per-ip-rate must be above 0 and below 5 (libtorrent bans an IP "
                       "that sends more than 5 a second)")
    if not args.timeout > 0:
        raise BadInput("--timeout must be a positive number of seconds")
    if args.resume and not args.output:
        raise BadInput("--resume needs -o FILE (the results to carry on from)")


async def until_stopped(coroutine, stop: asyncio.Event) -> bool:
    """Run `coroutine` unless `stop` is set first (then it is cancelled): whether it ran to
    the end. Its exceptions propagate."""
    work = asyncio.ensure_future(coroutine)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if work.done():
        work.result()
        return True
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    return False


async def run(args, stdin: IO[str], stdout: IO[str], stderr: IO[str],
              stop: asyncio.Event | None = None) -> int:
    """The whole command (`main` without the process around it): `stop`, when set, ends the
    batch as Ctrl-C does."""
    stop = stop or asyncio.Event()
    def warn(message: str) -> None:
        print(f"{PROG}: {message}", file=stderr, flush=True)

    check_options(args)
    targets = read_targets(args.items, args.input, stdin, warn)
    if not targets:
        raise BadInput("nothing valid to look up")
    output_path = Path(args.output) if args.output else None
    if args.resume and output_path is not None:
        done = done_infohashes(output_path, args.format)
        skipped = len(targets)
        targets = [target for target in targets if target.info_hash not in done]
        skipped -= len(targets)
        if skipped:
            warn(f"--resume: {skipped} already in {output_path}, {len(targets)} to go")
    config = NodeConfig.from_overrides(finder_overrides(args.rate, args.per_ip_rate))
    try:
        node = Node(args.bind, bootstrap=args.bootstrap and
                    [spec for value in args.bootstrap for spec in value.split(",") if spec],
                    state_file=args.state, read_only=not args.serve, config=config)
    except InvalidInput as exc:
        raise BadInput(str(exc)) from None
    totals = Totals(total=len(targets))
    interrupted = False
    stream = stdout
    try:
        if output_path is not None:
            append = args.resume and output_path.exists() and output_path.stat().st_size > 0
            stream = open(output_path, "a" if append else "w", encoding="utf-8", newline="")
        else:
            append = False
        writer = RecordWriter(stream, args.format, header=not append)
        progress = Progress(totals, stderr, args.quiet)
        web_runner = None
        async with node:
            progress.node = node
            if args.http:
                web_runner = await serve_progress(args.http, totals, node)
            try:
                if targets and not await until_stopped(node.bootstrap(), stop):
                    interrupted = True
                totals.started = time.monotonic()
                totals.queries_at_start = node.stats.queries_sent

                def on_record(record: dict) -> None:
                    writer.write(record)
                    progress.update()
                if not interrupted:
                    with progress:
                        ticker = asyncio.create_task(progress.tick())
                        try:
                            interrupted = not await until_stopped(find(
                                node, targets, concurrency=args.concurrency,
                                timeout=args.timeout, scrape=args.scrape,
                                on_record=on_record, totals=totals), stop)
                        finally:
                            ticker.cancel()
                    progress.update(force=True)
            finally:
                if web_runner is not None:
                    await web_runner.cleanup()
            if not args.quiet:
                print_summary(totals, node, stderr, interrupted)
    finally:
        if stream is not stdout:
            stream.close()
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FOUND if totals.with_peers else EXIT_NONE


async def serve_progress(address: str, totals: Totals, node: Node):
    from mldht.web import serve_progress as serve

    def snapshot() -> dict:
        return {**totals.snapshot(node), "dht": {
            "table": sum(f["table"]["nodes"] for f in node.status()["families"].values()),
            "rate_limited": node.stats.rate_limited}}
    try:
        runner, url = await serve(address, snapshot, title="peer finder")
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    print(f"{PROG}: progress on {url}", file=sys.stderr, flush=True)
    return runner


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def interrupt() -> None:
            # The first Ctrl-C ends the batch cleanly; a second one is the usual hard stop.
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, interrupt)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        return await run(args, sys.stdin, sys.stdout, sys.stderr, stop)
    try:
        return asyncio.run(guarded())
    except BadInput as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except JoinFailed as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_NO_JOIN
    except (MldhtError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
