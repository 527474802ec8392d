"""The DHT crawler: polite sweeps of the whole keyspace that measure the DHT.

    python tools/crawler.py crawl [--bootstrap HOST:PORT ...] [--db crawl.sqlite]
        [--duration S | --sweeps N] [--rate Q] [--bind IP:PORT ...] [--samples]
        [--http IP:PORT] [--json] [--resume] [--partition I/N]
    python tools/crawler.py estimate [--bootstrap HOST:PORT ...] [--db crawl.sqlite]
        [--zones Z] [--zone-nodes N] [--every S --duration S] [--json]
    python tools/crawler.py report --db crawl.sqlite --out DIR
    python tools/crawler.py export --db crawl.sqlite --format csv|jsonl [--table T]

`crawl` joins the DHT with one read-only node (BEP 43) and visits every node it can reach,
once per sweep (tools/crawling/traversal.py says how, and how it stays polite), recording
each visit in SQLite; `--resume` carries on the last crawl a crash or Ctrl-C left, without
visiting any node twice. `estimate` measures the DHT's size in seconds, from a crawl of a
few random zones of its keyspace (tools/crawling/zones.py), into the same database.
`report` writes one HTML page with plots and a JSON summary;
`export` writes a table as CSV or JSON lines.

Exit status: 0 done, 2 bad input, 3 the DHT could not be joined, 130 stopped by Ctrl-C
(the crawl is kept, and `--resume` goes on with it).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import asyncio
import json
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path

from mldht import Node, NodeConfig, __version__
from mldht.errors import InvalidInput, JoinFailed, MldhtError

if __package__:  # installed: the mldht-crawler command runs mldht_tools.crawler
    from .crawling.crawl import CrawlOptions, Crawler, partition_filter
    from .crawling.store import CrawlStore, StoreError, readable_sqlite, redacted
    from .crawling.zones import ZoneMeasurements, ZoneOptions, size_lookups
else:  # a clone: python tools/crawler.py
    from crawling.crawl import CrawlOptions, Crawler, partition_filter
    from crawling.store import CrawlStore, StoreError, readable_sqlite, redacted
    from crawling.zones import ZoneMeasurements, ZoneOptions, size_lookups
CRAWLING = f"{__package__}.crawling" if __package__ else "crawling"
"""Where the report and export modules are imported from when asked for (matplotlib is slow
to import, and only the report needs it)."""

PROG = "mldht-crawler" if __package__ else "crawler"
DEFAULT_RATE = 1000.0
"""Queries a second: a sweep of the public DHT (about 20 million nodes, 1.25 queries each)
in about 7 hours, on a quarter to a half of one core (docs/crawler.md: "The crawler at the public DHT's scale").
Every remote node still sees one or two queries a sweep; the limit is ours: bandwidth
(about 0.5 MB/s down), CPU, and the NAT table of a home router, which keeps a mapping for
each address queried for a minute or two (use --rate 100 behind one)."""
ESTIMATE_RATE = 2000.0
"""An estimate's queries a second: about 40,000 queries (16 zones of about 600 nodes that
answer, twice as many listed, a second try for the silent ones) in well under a minute.
Each remote node still sees one or two queries; the load is ours, for that minute."""
SLOT_SECONDS = 0.5
"""--concurrency by default: the visits a second --rate allows times this (a visit holds
its slot for a round trip, or for the stall time when the node is silent)."""
PUBLIC_DHT_NODES = 20_000_000
FORECAST_LOOKUPS = 3
"""Lookups behind the size estimate a forecast is made from, at least."""
PER_IP_RATE = 2.0
PER_IP_BURST = 10.0
PROGRESS_INTERVAL = 5.0


class BadInput(Exception):
    pass


def parse_partition(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--partition is I/N (e.g. 0/4), not {text!r}") from None
    if not 0 <= index < count or count > 256:
        raise argparse.ArgumentTypeError("--partition I/N needs 0 <= I < N <= 256")
    return index, count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mldht-crawler" if __package__ else "crawler.py", description="Crawl and measure the "
                                     "BitTorrent DHT, politely.")
    commands = parser.add_subparsers(dest="command", required=True)
    crawl = commands.add_parser("crawl", help="sweep the keyspace, recording every node")
    add_network_arguments(crawl)
    limit = crawl.add_mutually_exclusive_group()
    limit.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    limit.add_argument("--sweeps", type=int, metavar="N", help="sweeps to make (default 1)")
    crawl.add_argument("--every", type=float, metavar="S",
                       help="start a sweep every S seconds (with --sweeps or --duration: a "
                            "time series; a sweep longer than S is followed at once)")
    crawl.add_argument("--samples", action="store_true",
                       help="keep the infohashes nodes sample (BEP 51)")
    crawl.add_argument("--retries", type=int, default=0, metavar="N",
                       help="tries again after a timeout (default 0: next sweep)")
    crawl.add_argument("--concurrency", type=int, default=None, metavar="N",
                       help="visits in flight that have not stalled (default: --rate x "
                            f"{SLOT_SECONDS:g} s, at least 64)")
    crawl.add_argument("--estimate-lookups", type=int, default=16, metavar="N",
                       help="random lookups for the lookup-distance size estimate, at least, "
                            "made during each sweep; one more per 400 nodes answering, "
                            "up to 240 (default 16)")
    crawl.add_argument("--partition", type=parse_partition, metavar="I/N",
                       help="crawl only the ids of part I of N (by id prefix), as one of N "
                            "processes writing one crawl (needs --label)")
    crawl.add_argument("--label", metavar="NAME",
                       help="name of the crawl: the N processes of a partitioned crawl join "
                            "the crawl of that name (unique in the database)")
    crawl.add_argument("--routing-tables", action="store_true",
                       help="also store who lists whom (the neighbour graph)")
    crawl.add_argument("--resume", action="store_true",
                       help="carry on the last crawl that did not finish")
    crawl.add_argument("--http", metavar="IP:PORT", help="live progress page (loopback)")
    estimate = commands.add_parser(
        "estimate", help="the DHT's size from a crawl of a few random zones of its keyspace")
    add_network_arguments(estimate, rate=ESTIMATE_RATE)
    estimate.add_argument("--zones", type=int, default=16, metavar="Z",
                          help="zones (id prefixes) to crawl, each completely (default 16)")
    estimate.add_argument("--zone-nodes", type=int, default=500, metavar="N",
                          help="nodes that answer in a zone, at most (half to all of it): sets the "
                               "zones' width, from a pilot zone's count (default 500)")
    estimate.add_argument("--bits", type=int, metavar="B",
                          help="the zones' width in bits (default: from --zone-nodes)")
    estimate.add_argument("--retries", type=int, default=1, metavar="N",
                          help="tries again after a timeout (default 1: a lost datagram must "
                               "not count a node as silent)")
    estimate.add_argument("--concurrency", type=int, default=None, metavar="N",
                          help="visits in flight that have not stalled (default: --rate x "
                               f"{SLOT_SECONDS:g} s, at least 64)")
    estimate.add_argument("--every", type=float, metavar="S",
                          help="measure again every S seconds (from one start to the next) "
                               "until --duration; one JSON line per measurement with --json")
    estimate.add_argument("--duration", type=float, metavar="S",
                          help="with --every: stop after S seconds")
    estimate.add_argument("--label", metavar="NAME", help="name of the crawl (unique)")
    report = commands.add_parser("report", help="an HTML page with plots and a JSON summary")
    report.add_argument("--db", default="crawl.sqlite", metavar="PATH|URL",
                        help="SQLite file or postgresql:// URL (copied to SQLite first)")
    report.add_argument("--out", required=True, metavar="DIR")
    export = commands.add_parser("export", help="a table as CSV or JSON lines on stdout")
    export.add_argument("--db", default="crawl.sqlite", metavar="PATH|URL")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("--table", default="visits")
    return parser


def add_network_arguments(parser: argparse.ArgumentParser, rate: float = DEFAULT_RATE) -> None:
    """What `crawl` and `estimate` share: where to join, where to write, how fast."""
    parser.add_argument("--bootstrap", action="append", metavar="HOST:PORT",
                        help="bootstrap node (repeatable; default: the public routers)")
    parser.add_argument("--db", default="crawl.sqlite", metavar="PATH|URL",
                        help="SQLite file (default crawl.sqlite) or postgresql://user@host/db")
    parser.add_argument("--rate", type=float, default=rate, metavar="Q",
                        help=f"queries per second in all (default {rate:g}); to any one "
                             f"IP at most {PER_IP_RATE:g} a second after a burst of "
                             f"{PER_IP_BURST:g}, one at a time")
    parser.add_argument("--bind", action="append", metavar="IP:PORT",
                        help="local UDP address; twice (IPv4 and IPv6) to crawl both (BEP 32)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="seconds to wait for an answer (default 5)")
    parser.add_argument("--per-ip-visits", type=int, default=16, metavar="N",
                        help="nodes visited at most on one IP a sweep (default 16); the rest "
                             "of a crowded IP's nodes (a Sybil cluster) are recorded as skipped")
    parser.add_argument("--no-sample", action="store_true",
                        help="ask find_node only (BEP 51 support then goes unrecorded)")
    parser.add_argument("--serve", action="store_true", help="answer queries (default read-only)")
    parser.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


class Progress:
    """rich's live line on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, crawler: Crawler, stream, quiet: bool) -> None:
        self.crawler = crawler
        self.stream = stream
        self.quiet = quiet
        self.live = None

    def line(self) -> str:
        p = self.crawler.progress()
        total = f", estimated total {p['estimated_total']:,}" if p["estimated_total"] else ""
        if p.get("eta_seconds") is not None:
            total += f", sweep done in about {duration_text(p['eta_seconds'])}"
        part = f"part {p['part']}, " if p.get("part") else ""
        return (f"{part}sweep {p['sweep']}: found {p['found']:,}, visited {p['visited']:,}, "
                f"answering {p['answering']:,}, queue {p['queue']:,}, "
                f"{p['queries_per_second']:g} q/s, {p['elapsed']:.0f} s{total}")

    async def run(self) -> None:
        if self.quiet:
            return
        if self.stream.isatty():
            # rich: a maintained live display (redraws in place), not ours.
            from rich.console import Console
            from rich.live import Live
            with Live(self.line(), console=Console(file=self.stream), transient=True,
                      refresh_per_second=4) as live:
                while True:
                    await asyncio.sleep(0.5)
                    live.update(self.line())
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            print(f"{PROG}: {self.line()}", file=self.stream, flush=True)


def duration_text(seconds: float) -> str:
    """3 h 20 min, 12 min, 40 s."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


QUERIES_PER_NODE = 1.25
"""A sweep's queries per node found, as measured on the emulated DHT (1.22 to 1.26)."""


def sweep_forecast(size: dict | None, rate: float, public: bool) -> str:
    """What a whole sweep will take at `rate`, from the engine's size estimate (the
    join's lookups) or, with too few lookups, the public DHT's known size."""
    if size and size.get("size") and (size.get("lookups") or 0) >= FORECAST_LOOKUPS:
        nodes, where = int(size["size"]), (f"about {int(size['size']):,} nodes answer "
                                           f"(lookup distances, {size['lookups']} lookups)")
    elif public:
        nodes, where = PUBLIC_DHT_NODES, (f"the public DHT holds about "
                                          f"{PUBLIC_DHT_NODES // 1_000_000} million nodes")
    else:
        return f"size unknown yet; {rate:g} queries a second"
    # Nodes found run about twice the nodes that answer (half the contacts are silent).
    found = nodes * (2 if size and size.get("size") else 1)
    seconds = found * QUERIES_PER_NODE / rate
    return (f"{where}: a sweep at {rate:g} queries a second takes about "
            f"{duration_text(seconds)}")


def make_node(args) -> Node:
    """The crawler's node: read-only unless --serve, at --rate, polite to each IP."""
    config = NodeConfig.from_overrides({
        "query_rate": args.rate,
        # a second of queries at most at once
        "query_burst": max(10.0, min(100.0, args.rate)),
        "per_ip_query_rate": PER_IP_RATE,
        "per_ip_query_burst": PER_IP_BURST,
        # Every query may wait out its whole timeout (half the real DHT's contacts
        # never answer): room for all of them, so that silence never slows the rate.
        "max_pending": max(4096, int(args.rate * args.timeout * 1.5)),
        "max_queued_queries": max(65_536, int(args.rate * args.timeout * 3)),
        # Its walk keeps its own frontier, not the table: sorting thousands of answers a
        # second into sub-prefixes and round trips would buy it nothing.
        "prefer_fast_nodes": False})
    try:
        return Node(args.bind or ["0.0.0.0:0"], bootstrap=args.bootstrap and
                    [s for value in args.bootstrap for s in value.split(",") if s],
                    read_only=not args.serve, config=config)
    except InvalidInput as exc:
        raise BadInput(str(exc)) from None


def _settings(args) -> dict:
    return {"rate": args.rate, "per_ip_rate": PER_IP_RATE, "per_ip_burst": PER_IP_BURST,
            "concurrency": args.concurrency, "timeout": args.timeout, "retries": args.retries,
            "sweeps": args.sweeps,
            "duration": args.duration, "samples": args.samples, "sample": not args.no_sample,
            "partition": None if args.partition is None else list(args.partition),
            "routing_tables": args.routing_tables, "read_only": not args.serve,
            "label": args.label,
            "bootstrap": args.bootstrap, "bind": args.bind}


async def crawl(args, stop: asyncio.Event) -> int:
    if args.concurrency is None:
        args.concurrency = max(64, int(args.rate * SLOT_SECONDS))
    if args.rate <= 0 or args.concurrency < 1 or args.timeout <= 0 or args.per_ip_visits < 1:
        raise BadInput("--rate, --concurrency, --timeout and --per-ip-visits must be positive")
    if args.sweeps is not None and args.sweeps < 1:
        raise BadInput("--sweeps must be at least 1")
    if args.every is not None and (args.every <= 0 or not (args.sweeps or args.duration)):
        raise BadInput("--every takes a positive number of seconds, with --sweeps N or "
                       "--duration S to end the series")
    if args.partition is not None and not args.label:
        raise BadInput("--partition needs --label NAME: the name its N processes share")
    store = await CrawlStore.open(args.db)
    try:
        first_sweep, resume, sample_after = 1, None, {}
        keep = partition_filter(args.partition)
        part = None if args.partition is None else args.partition[0]
        if args.partition is not None:
            crawl_id = await store.begin_crawl(_settings(args), __version__, label=args.label)
            first_sweep = await store.claim_part(crawl_id, *args.partition, resume=args.resume)
            where = f"part {args.partition[0]}/{args.partition[1]} of crawl {crawl_id}"
        elif args.resume:
            row = await store.latest_unfinished()
            if row is None:
                raise BadInput(f"nothing to resume in {store.target}: every crawl there "
                               "finished")
            crawl_id = row.id
            first_sweep = await store.current_sweep(crawl_id)
            await store.resume_crawl(crawl_id)
            where = f"crawl {crawl_id}"
        else:
            crawl_id = await store.begin_crawl(_settings(args), __version__, label=args.label)
            where = f"crawl {crawl_id}"
        if args.resume:
            resume = (*await store.frontier(crawl_id, first_sweep, keep),
                      await store.visited_contacts(crawl_id, first_sweep, keep))
            sample_after = await store.sample_intervals(crawl_id)
            print(f"{PROG}: resuming {where}, sweep {first_sweep}: "
                  f"{len(resume[1]):,} nodes visited, {len(resume[0]):,} to go",
                  file=sys.stderr, flush=True)
        elif args.partition is not None:
            print(f"{PROG}: crawling {where} ({args.label!r}) into {store.target}",
                  file=sys.stderr, flush=True)
        node = make_node(args)
        # --duration: sweep after sweep until the time is up; else --sweeps (default 1).
        options = CrawlOptions(sweeps=None if args.duration else (args.sweeps or 1),
                               duration=args.duration, every=args.every,
                               concurrency=args.concurrency,
                               timeout=args.timeout, retries=args.retries,
                               samples=args.samples,
                               sample=not args.no_sample,
                               estimate_lookups=args.estimate_lookups,
                               partition=args.partition, routing_tables=args.routing_tables,
                               per_ip_visits=args.per_ip_visits)
        async with node:
            try:
                await node.bootstrap()
            except JoinFailed:
                await store.end_crawl(crawl_id, "failed", 0, part=part)
                raise
            crawler = Crawler(node, store, crawl_id, options, first_sweep=first_sweep,
                              resume=resume, sample_after=sample_after)
            if not args.quiet:
                if (node.estimated_size().lookups or 0) < FORECAST_LOOKUPS:
                    # A join can leave too few lookups behind for an estimate: a few more.
                    await size_lookups(node, FORECAST_LOOKUPS + 1, random.Random())
                forecast = sweep_forecast(node.estimated_size().as_dict(), args.rate,
                                          public=not args.bootstrap)
                print(f"{PROG}: {forecast}", file=sys.stderr, flush=True)
            web = await serve_progress(args.http, crawler) if args.http else None
            ticker = asyncio.create_task(Progress(crawler, sys.stderr, args.quiet).run())
            try:
                result = await crawler.run(stop)
            finally:
                ticker.cancel()
                if web is not None:
                    await web.cleanup()
            status = "stopped" if result.stopped else "complete"
            await store.end_crawl(crawl_id, status, first_sweep - 1 + result.sweeps_done,
                                  part=part)
            summary = {"crawl": crawl_id, "status": status, "db": store.target,
                       **crawler.progress(),
                       "part": None if args.partition is None else list(args.partition),
                       "sweeps_done": result.sweeps_done,
                       "sweep_stats": [dataclasses.asdict(stats) for stats in result.stats],
                       "estimates": [[e.as_dict() for e in sweep] for sweep in result.estimates]}
            if args.json:
                print(json.dumps(summary))
            elif not args.quiet:
                print_summary(summary)
            return 130 if result.stopped else 0
    finally:
        await store.close()


async def estimate(args, stop: asyncio.Event) -> int:
    """`estimate`: zone estimates of the DHT's size (crawling/zones.py), once or --every S
    seconds until --duration, each a sweep of one crawl of kind `estimate`."""
    if args.concurrency is None:
        args.concurrency = max(64, int(args.rate * SLOT_SECONDS))
    if args.rate <= 0 or args.concurrency < 1 or args.timeout <= 0 or args.per_ip_visits < 1:
        raise BadInput("--rate, --concurrency, --timeout and --per-ip-visits must be positive")
    if args.zones < 2:
        raise BadInput("--zones must be at least 2 (the interval comes from their spread)")
    if args.zone_nodes < 10:
        raise BadInput("--zone-nodes must be at least 10")
    if args.bits is not None and not 0 <= args.bits <= 32:
        raise BadInput("--bits must be 0 to 32")
    if (args.every is None) != (args.duration is None):
        raise BadInput("--every and --duration go together (measure every S seconds for S)")
    if args.every is not None and (args.every <= 0 or args.duration <= 0):
        raise BadInput("--every and --duration must be positive")
    store = await CrawlStore.open(args.db)
    try:
        settings = {**_estimate_settings(args), "kind": "estimate"}
        crawl_id = await store.begin_crawl(settings, __version__, label=args.label,
                                           kind="estimate")
        node = make_node(args)
        options = ZoneOptions(zones=args.zones, nodes_per_zone=args.zone_nodes, bits=args.bits,
                              concurrency=args.concurrency, timeout=args.timeout,
                              retries=args.retries, sample=not args.no_sample,
                              per_ip_visits=args.per_ip_visits)
        async with node:
            try:
                await node.bootstrap()
            except JoinFailed:
                await store.end_crawl(crawl_id, "failed", 0)
                raise
            measurements = ZoneMeasurements(node, store, crawl_id, options)
            ticker = asyncio.create_task(
                ZoneProgress(measurements, sys.stderr, args.quiet).run())
            try:
                started = node.clock()
                number = 0
                while not stop.is_set():
                    number += 1
                    work = asyncio.ensure_future(measurements.measure(number))
                    stopping = asyncio.ensure_future(stop.wait())
                    await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    if not work.done():
                        work.cancel()
                        await asyncio.gather(work, return_exceptions=True)
                        break
                    result = work.result()
                    sessions = measurements.sessions()
                    summary = {"crawl": crawl_id, "measurement": number, **result.as_dict(),
                               "at": round(time.time(), 1),
                               "shares": await measurements.shares(number),
                               "churn": measurements.churn(),
                               "sessions": None if sessions is None else {
                                   key: sessions[key] for key in ("observed", "ended",
                                                                  "median_s")}}
                    if args.json:
                        print(json.dumps(summary), flush=True)
                    if not args.quiet:
                        print(f"{PROG}: {estimate_line(summary)}", file=sys.stderr, flush=True)
                    if args.every is None:
                        break
                    next_start = started + number * args.every
                    if next_start >= started + args.duration:
                        break
                    try:
                        await asyncio.wait_for(stop.wait(), max(0.0, next_start - node.clock()))
                    except asyncio.TimeoutError:
                        pass
            finally:
                ticker.cancel()
            stopped = stop.is_set()
            await store.end_crawl(crawl_id, "stopped" if stopped else "complete",
                                  measurements.done)
            if not args.quiet and measurements.done >= 2:
                print(f"{PROG}: {series_line(measurements)}", file=sys.stderr, flush=True)
            return 130 if stopped else 0
    finally:
        await store.close()


def estimate_line(summary: dict) -> str:
    """One line: the two estimates with their intervals, and what they cost."""
    def text(estimate: dict) -> str:
        if estimate["value"] is None:
            return "unknown"
        interval = "" if estimate["low"] is None else \
            f" (95 %: {estimate['low']:,} to {estimate['high']:,})"
        return f"{estimate['value']:,}{interval}"
    return (f"estimate {summary['measurement']}: {text(summary['reachable'])} nodes answer, "
            f"{text(summary['listed'])} listed; {summary['zones']} zones of "
            f"{summary['bits']} bits, {summary['queries']:,} queries, "
            f"{summary['seconds']:.1f} s")


def series_line(measurements: ZoneMeasurements) -> str:
    """One line for a series: the size's range, churn, and sessions."""
    values = [r.reachable.value for r in measurements.results if r.reachable.value]
    line = (f"{measurements.done} measurements: {min(values):,.0f} to {max(values):,.0f} "
            "nodes answer") if values else f"{measurements.done} measurements"
    churn = measurements.churn()
    if churn and churn["left_share"] is not None:
        line += (f"; last step {churn['left_share']:.1%} of the zones' nodes left, "
                 f"{churn['joined_share']:.1%} joined")
    sessions = measurements.sessions()
    if sessions:
        median = sessions["median_s"]
        line += (f"; {sessions['observed']:,} sessions began ({sessions['ended']:,} ended), "
                 + (f"median {duration_text(median)}" if median else
                    "more than half still running"))
    return line


def _estimate_settings(args) -> dict:
    return {"rate": args.rate, "per_ip_rate": PER_IP_RATE, "per_ip_burst": PER_IP_BURST,
            "concurrency": args.concurrency, "timeout": args.timeout, "retries": args.retries,
            "zones": args.zones, "zone_nodes": args.zone_nodes, "bits": args.bits,
            "every": args.every, "duration": args.duration, "sample": not args.no_sample,
            "read_only": not args.serve, "label": args.label, "bootstrap": args.bootstrap,
            "bind": args.bind}


class ZoneProgress:
    """A plain line every few seconds while a zone estimate crawls."""

    def __init__(self, measurements: ZoneMeasurements, stream, quiet: bool) -> None:
        self.measurements = measurements
        self.stream = stream
        self.quiet = quiet

    async def run(self) -> None:
        if self.quiet:
            return
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            p = self.measurements.progress()
            if p is not None:
                print(f"{PROG}: estimate {p['measurement']}: {p['zones']} zones, found "
                      f"{p['found']:,}, visited {p['visited']:,}, answering "
                      f"{p['answering']:,}, queue {p['queue']:,}", file=self.stream,
                      flush=True)


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console(file=sys.stderr)
    table = Table(title=f"crawl {summary['crawl']} ({summary['status']})")
    for column in ("estimate", "value", "95 % interval", "counts"):
        table.add_column(column, justify="right" if column != "estimate" else "left")
    for estimate in (summary["estimates"][-1] if summary["estimates"] else []):
        low, high = estimate["low"], estimate["high"]
        interval = "" if low is None or high is None else f"{low:,.0f} - {high:,.0f}"
        value = "-" if estimate["value"] is None else f"{estimate['value']:,.0f}"
        table.add_row(estimate["name"], value, interval, estimate["counts"])
    console.print(table)
    console.print(f"visited {summary['visited']:,}, answering {summary['answering']:,}, "
                  f"{summary['sweeps_done']} sweep(s) in {summary['elapsed']:.0f} s; "
                  f"database {summary['db']}")


async def serve_progress(address: str, crawler: Crawler):
    from mldht.web import serve_progress as serve
    try:
        runner, url = await serve(address, crawler.progress, title="crawl")
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    print(f"{PROG}: progress on {url}", file=sys.stderr, flush=True)
    return runner


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    try:
        if args.command == "report":
            build_report = importlib.import_module(f"{CRAWLING}.report").build_report
            with readable_sqlite(args.db) as path:
                summary = build_report(path, args.out, shown_as=redacted(args.db))
            print(f"{PROG}: report written to {Path(args.out) / 'index.html'} "
                  f"({len(summary.get('crawls', []))} crawls)", file=sys.stderr)
            return 0
        if args.command == "export":
            export = importlib.import_module(f"{CRAWLING}.export").export
            try:
                with readable_sqlite(args.db) as path:
                    export(path, args.table, args.format, sys.stdout)
                sys.stdout.flush()
            except BrokenPipeError:  # `| head`: the reader has all it wanted
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

        async def guarded() -> int:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()

            def interrupt() -> None:
                stop.set()
                loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C: the hard way
            loop.add_signal_handler(signal.SIGINT, interrupt)
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            if args.command == "estimate":
                return await estimate(args, stop)
            return await crawl(args, stop)
        return asyncio.run(guarded())
    except (BadInput, StoreError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except JoinFailed as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 3
    except (MldhtError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
