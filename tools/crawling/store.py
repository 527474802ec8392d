"""Where a crawl goes: SQLite by default (a file; WAL, batched transactions), or PostgreSQL
(`postgresql://user@host:port/db`, through asyncpg), into which several crawler processes, on
one host or several, each crawl a part of the keyspace (`--partition I/N --label NAME`) as
one crawl. Several crawls in one database either way; the same schema and statements on
both (`?` placeholders become `$n` for PostgreSQL; `interval` is quoted, a keyword there).

The schema (also in docs/crawler.md):

- `crawls`: one row per crawl: `id`, `started_at` / `finished_at` (Unix seconds), `status`
  (`running`, `complete`, `stopped`; a `running` crawl whose process is gone is shown as
  `incomplete`), `pid`, `host`, `settings` (JSON: the command's options), `sweeps_done`,
  `mldht_version`, `label` (the name the processes of a partitioned crawl share; unique),
  `kind` (`crawl`: sweeps of the keyspace; `estimate`: zone estimates).
- `parts`: the processes of a partitioned crawl, one row per part: `crawl`, `part`, `parts`
  (N), `status`, `pid`, `host`, `started_at`, `finished_at`, `sweeps_done`. A crawl's
  `sweeps_done` is then the fewest any of its N parts has done, and it is `complete` when
  all N are.
- `contacts`: every node a sweep learned of, one per (IP, port) per sweep (the first id
  seen on it): `crawl`, `sweep`, `ip`, `port`, `family`, `node_id`, `found_at`, `referrer`
  (`ip:port` of the node that listed it, NULL for the crawler's own table). With `visits`
  it is the frontier a `--resume` carries on from.
- `visits`: one row per node visited: `crawl`, `sweep`, `at`, `ip`, `port`, `family`,
  `node_id` (as listed), `answered_id` (as it answered), `v` (raw), `client`,
  `client_version`, `bep42` (1 when its id is valid for its IP), `rtt` (seconds),
  `outcome` (`answered`, `timeout`, `error`), `error_code`, `queries`, `referrer`,
  `bep51` (1 answered sample_infohashes, 0 refused it, NULL not asked), `num`, `interval`,
  `samples` (count), `neighbours` (nodes it listed).
- `intents`: the nodes (`ip`, `port`) a visit was started for, committed before the query
  leaves: after a crash, `--resume` never asks them again, even when the crash lost their
  answer.
- `aliases`: other ids seen on an (IP, port) already known this sweep: counted, never
  visited as new nodes. (Other ports on a known IP are other nodes.)
- `samples`: with `--samples`, each infohash a node sampled (`crawl`, `infohash`, `ip`, `at`).
- `edges`: with `--routing-tables`, who lists whom (`crawl`, `sweep`, `from_ip`, `to_ip`,
  `to_port`, `to_id`).
- `estimates`: each size estimate of a sweep: `name`, `value`, `low`, `high` (95 %),
  `counts` (`reachable` or `alive`), `detail` (JSON).
- `zones`: the zones of a zone estimate (a crawl of `kind` `estimate`; its sweeps are its
  measurements): `zone` (`prefix/bits`, the prefix in hex), `bits`, `found`, `answered`,
  `skipped`, `reachable` and `listed` (the corrected counts the estimate scales up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SCHEMA = """
CREATE TABLE IF NOT EXISTS crawls (
    id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,
    status TEXT NOT NULL, pid INTEGER, host TEXT, settings TEXT, sweeps_done INTEGER DEFAULT 0,
    mldht_version TEXT, label TEXT, kind TEXT DEFAULT 'crawl');
CREATE TABLE IF NOT EXISTS parts (
    crawl INTEGER NOT NULL, part INTEGER NOT NULL, parts INTEGER NOT NULL, status TEXT NOT NULL,
    pid INTEGER, host TEXT, started_at REAL, finished_at REAL, sweeps_done INTEGER DEFAULT 0,
    PRIMARY KEY (crawl, part));
CREATE TABLE IF NOT EXISTS contacts (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL,
    family TEXT NOT NULL, node_id BLOB NOT NULL, found_at REAL NOT NULL, referrer TEXT,
    PRIMARY KEY (crawl, sweep, ip, port));
CREATE TABLE IF NOT EXISTS visits (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, at REAL NOT NULL, ip TEXT NOT NULL,
    port INTEGER NOT NULL, family TEXT NOT NULL, node_id BLOB, answered_id BLOB, v BLOB,
    client TEXT, client_version TEXT, bep42 INTEGER, rtt REAL, outcome TEXT NOT NULL,
    error_code INTEGER, queries INTEGER NOT NULL, referrer TEXT, bep51 INTEGER, num INTEGER,
    "interval" INTEGER, samples INTEGER, neighbours INTEGER,
    PRIMARY KEY (crawl, sweep, ip, port));
CREATE TABLE IF NOT EXISTS aliases (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL,
    node_id BLOB NOT NULL, referrer TEXT, PRIMARY KEY (crawl, sweep, ip, port, node_id));
CREATE TABLE IF NOT EXISTS intents (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (crawl, sweep, ip, port));
CREATE TABLE IF NOT EXISTS samples (
    crawl INTEGER NOT NULL, infohash BLOB NOT NULL, ip TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (crawl, infohash, ip));
CREATE TABLE IF NOT EXISTS edges (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, from_ip TEXT NOT NULL, to_ip TEXT NOT NULL,
    to_port INTEGER NOT NULL, to_id BLOB NOT NULL, PRIMARY KEY (crawl, sweep, from_ip, to_ip));
CREATE TABLE IF NOT EXISTS estimates (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, at REAL NOT NULL, name TEXT NOT NULL,
    value REAL, low REAL, high REAL, counts TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS zones (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, at REAL NOT NULL, zone TEXT NOT NULL,
    bits INTEGER NOT NULL, found INTEGER NOT NULL, answered INTEGER NOT NULL,
    skipped INTEGER NOT NULL, reachable REAL, listed REAL, PRIMARY KEY (crawl, sweep, zone));
CREATE INDEX IF NOT EXISTS visits_node ON visits (node_id);
"""
LABEL_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS crawls_label ON crawls (label)"

TABLES = ("crawls", "parts", "contacts", "visits", "intents", "aliases", "samples", "edges",
          "estimates", "zones")
VISIT_COLUMNS = ("crawl", "sweep", "at", "ip", "port", "family", "node_id", "answered_id", "v",
                 "client", "client_version", "bep42", "rtt", "outcome", "error_code", "queries",
                 "referrer", "bep51", "num", "interval", "samples", "neighbours")
FLUSH_ROWS = 2000
INSERTS = {
    "contacts": "INSERT INTO contacts VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
    "aliases": "INSERT INTO aliases VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
    "intents": "INSERT INTO intents (crawl, sweep, ip, port, at) VALUES (?,?,?,?,?) "
               "ON CONFLICT DO NOTHING",
    # A visit stored again (a second try) replaces the first.
    "visits": (f"INSERT INTO visits VALUES ({','.join('?' * len(VISIT_COLUMNS))}) "
               "ON CONFLICT (crawl, sweep, ip, port) DO UPDATE SET " + ", ".join(
                   f'"{c}"=excluded."{c}"' for c in VISIT_COLUMNS[2:])),
    "samples": "INSERT INTO samples VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
    "edges": "INSERT INTO edges VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
    "estimates": "INSERT INTO estimates VALUES (?,?,?,?,?,?,?,?,?)",
    "zones": "INSERT INTO zones VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
}
# Contacts before visits: a resumed crawl never sees a visit of an unknown node.
FLUSH_ORDER = ("contacts", "aliases", "intents", "visits", "samples", "edges", "estimates",
               "zones")


class StoreError(Exception):
    """The database cannot be used (a one-line reason)."""


def is_postgres(target: str | os.PathLike) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


@dataclass
class CrawlRow:
    id: int
    started_at: float
    finished_at: float | None
    status: str
    pid: int | None
    host: str | None
    settings: dict
    sweeps_done: int

    @property
    def shown_status(self) -> str:
        """`running` only while its process lives (on this host): else `incomplete`."""
        if self.status != "running":
            return self.status
        if self.host == socket.gethostname() and self.pid and _process_alive(self.pid):
            return "running"
        return "incomplete"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the two backends: the same few calls -----------------------------------------------------

class _Sqlite:
    """sqlite3 behind the async calls the store makes (each call is quick and local)."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(crawls)")}
            if "label" not in columns:  # a database from before partitioned crawls
                self.db.execute("ALTER TABLE crawls ADD COLUMN label TEXT")
            if "kind" not in columns:  # from before zone estimates
                self.db.execute("ALTER TABLE crawls ADD COLUMN kind TEXT DEFAULT 'crawl'")
            if "port" not in {row[1] for row in self.db.execute("PRAGMA table_info(intents)")}:
                self._one_row_per_port()
            self.db.execute(LABEL_INDEX)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot use {path} as a crawl database: {exc}") from None

    def _one_row_per_port(self) -> None:
        """A database from before nodes were (IP, port): its contacts, visits and intents
        keyed by IP move to tables keyed by (IP, port) (an intent takes its contact's
        port), in one transaction."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("contacts", "visits", "intents"):
                db.execute(f"ALTER TABLE {table} RENAME TO {table}_by_ip")
            db.executescript(SCHEMA.replace("CREATE INDEX", "-- "))
            db.execute("INSERT INTO contacts SELECT * FROM contacts_by_ip")
            db.execute("INSERT INTO visits SELECT * FROM visits_by_ip")
            db.execute("INSERT INTO intents SELECT i.crawl, i.sweep, i.ip, COALESCE((SELECT "
                       "port FROM contacts_by_ip c WHERE c.crawl=i.crawl AND c.sweep=i.sweep "
                       "AND c.ip=i.ip), 0), i.at FROM intents_by_ip i")
            for table in ("contacts", "visits", "intents"):
                db.execute(f"DROP TABLE {table}_by_ip")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        db.executescript(SCHEMA)

    async def fetch(self, sql: str, *args) -> list[tuple]:
        return self.db.execute(sql, args).fetchall()

    async def execute(self, sql: str, *args) -> None:
        self.db.execute(sql, args)

    @contextlib.asynccontextmanager
    async def transaction(self):
        # IMMEDIATE: several processes may share the file (one per partition).
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    async def executemany(self, sql: str, rows: list[tuple]) -> None:
        self.db.executemany(sql, rows)

    async def chunks(self, select: str, size: int = 20_000):
        """The rows of `select`, `size` at a time."""
        cursor = self.db.execute(select)
        while rows := cursor.fetchmany(size):
            yield rows

    async def close(self) -> None:
        self.db.close()


_PLACEHOLDER = re.compile(r"\?")


class _Postgres:
    """asyncpg (a maintained asyncio PostgreSQL driver: the crawl's loop never waits on the
    database while packets come in)."""

    name = "postgresql"

    def __init__(self, connection) -> None:
        self.connection = connection
        self._statements: dict[str, str] = {}

    @classmethod
    async def connect(cls, url: str) -> "_Postgres":
        try:
            import asyncpg
        except ImportError:
            raise StoreError("a postgresql:// database needs asyncpg "
                             "(pip install asyncpg)") from None
        try:
            connection = await asyncpg.connect(url, timeout=10)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError,
                asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot connect to {redacted(url)}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from None
        self = cls(connection)
        # As SQLite's synchronous=NORMAL: a commit is in the server once it returns (a
        # crawler killed at any moment loses nothing committed) without waiting for the
        # server's disk; only a crash of the server itself could lose its last moments.
        await connection.execute("SET synchronous_commit TO OFF")
        schema = (SCHEMA.replace("id INTEGER PRIMARY KEY", "id BIGSERIAL PRIMARY KEY")
                  .replace(" BLOB", " BYTEA").replace(" REAL", " DOUBLE PRECISION")
                  .replace(" INTEGER", " BIGINT"))
        # Several processes start at once: one creates the tables while the others wait.
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(7016884)")
            await connection.execute(schema)
            old = await connection.fetchval(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_name='intents' "
                "AND column_name='port' AND table_schema=current_schema()") == 0
            if old:  # from before nodes were (IP, port): re-keyed, as _Sqlite does
                await connection.execute(
                    "ALTER TABLE intents ADD COLUMN port BIGINT NOT NULL DEFAULT 0; "
                    "UPDATE intents i SET port=c.port FROM contacts c WHERE c.crawl=i.crawl "
                    "AND c.sweep=i.sweep AND c.ip=i.ip")
                for table in ("contacts", "visits", "intents"):
                    await connection.execute(
                        f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey, "
                        f"ADD PRIMARY KEY (crawl, sweep, ip, port)")
            await connection.execute(
                "ALTER TABLE crawls ADD COLUMN IF NOT EXISTS kind TEXT DEFAULT 'crawl'")
            await connection.execute(LABEL_INDEX)
        return self

    def _sql(self, sql: str) -> str:
        text = self._statements.get(sql)
        if text is None:
            counter = iter(range(1, 1000))
            text = self._statements[sql] = _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)
        return text

    async def fetch(self, sql: str, *args) -> list[tuple]:
        return [tuple(row) for row in await self.connection.fetch(self._sql(sql), *args)]

    async def execute(self, sql: str, *args) -> None:
        await self.connection.execute(self._sql(sql), *args)

    def transaction(self):
        return self.connection.transaction()

    async def executemany(self, sql: str, rows: list[tuple]) -> None:
        await self.connection.executemany(self._sql(sql), rows)

    async def chunks(self, select: str, size: int = 20_000):
        """The rows of `select`, `size` at a time (a server-side cursor)."""
        async with self.connection.transaction():
            cursor = await self.connection.cursor(select)
            while rows := await cursor.fetch(size):
                yield [tuple(row) for row in rows]

    async def close(self) -> None:
        await self.connection.close(timeout=10)


def redacted(url: str | os.PathLike) -> str:
    """The URL without its password, for messages (a path as it is)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", str(url))


# --- the store ----------------------------------------------------------------------------------

class CrawlStore:
    """A crawl database, SQLite or PostgreSQL (`await CrawlStore.open(target)`).

    Rows are queued by the `add_*` calls and committed in batches, each batch one
    transaction: when `FLUSH_ROWS` are waiting (in the background) and whenever
    `add_intents` makes the nodes about to be queried durable, which the sweep does before
    each batch of queries leaves. A crash loses only answers not yet committed, never the
    database, and never the record that a node was asked."""

    def __init__(self, backend, target: str) -> None:
        self.backend = backend
        self.target = target
        self._queued: dict[str, list[tuple]] = {}
        self._queued_rows = 0
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()

    @classmethod
    async def open(cls, target: str | os.PathLike) -> "CrawlStore":
        """SQLite at a path (created if need be), or PostgreSQL at a `postgresql://` URL."""
        if is_postgres(target):
            return cls(await _Postgres.connect(str(target)), redacted(str(target)))
        return cls(_Sqlite(Path(target)), str(target))

    @property
    def queued_rows(self) -> int:
        """Rows waiting for their batch."""
        return self._queued_rows

    async def fetch(self, sql: str, *args) -> list[tuple]:
        """Rows of a read-only statement (`?` placeholders, whichever the backend)."""
        return await self.backend.fetch(sql, *args)

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            await self.backend.close()

    # --- crawls ------------------------------------------------------------------------------

    async def begin_crawl(self, settings: dict, version: str, label: str | None = None,
                          kind: str = "crawl") -> int:
        """A new crawl (`kind` `crawl`: sweeps; `estimate`: zone estimates); with `label`,
        the crawl of that name, made by whichever process of a partitioned crawl comes first
        (the others join it)."""
        async with self._lock, self.backend.transaction():
            rows = await self.backend.fetch(
                "INSERT INTO crawls (started_at, status, pid, host, settings, mldht_version, "
                "label, kind) VALUES (?, 'running', ?, ?, ?, ?, ?, ?) ON CONFLICT (label) DO "
                "NOTHING RETURNING id",
                time.time(), os.getpid(), socket.gethostname(), json.dumps(settings), version,
                label, kind)
            if not rows:  # another process of the partitioned crawl made it
                rows = await self.backend.fetch("SELECT id FROM crawls WHERE label=?", label)
            return rows[0][0]

    async def claim_part(self, crawl: int, part: int, parts: int, resume: bool) -> int:
        """Take part `part` of `parts` of a partitioned crawl for this process; returns the
        sweep it starts at. A part another process holds, a finished part, a part started
        before (without `resume`) or a different N are refused, with the reason."""
        async with self._lock, self.backend.transaction():
            known = await self.backend.fetch("SELECT DISTINCT parts FROM parts WHERE crawl=?",
                                             crawl)
            if known and known[0][0] != parts:
                raise StoreError(f"crawl {crawl} is split into {known[0][0]} parts, not {parts}")
            rows = await self.backend.fetch(
                "SELECT status, pid, host, sweeps_done FROM parts WHERE crawl=? AND part=?",
                crawl, part)
            if not rows:
                if resume:
                    raise StoreError(f"part {part}/{parts} of crawl {crawl} was never started: "
                                     "nothing to resume")
                claimed = await self.backend.fetch(
                    "INSERT INTO parts (crawl, part, parts, status, pid, host, started_at) "
                    "VALUES (?, ?, ?, 'running', ?, ?, ?) ON CONFLICT DO NOTHING RETURNING part",
                    crawl, part, parts, os.getpid(), socket.gethostname(), time.time())
                if not claimed:
                    raise StoreError(f"part {part}/{parts} of crawl {crawl} was just taken by "
                                     "another process")
                return 1
            status, pid, host, sweeps_done = rows[0]
            if status == "complete":
                raise StoreError(f"part {part}/{parts} of crawl {crawl} is complete")
            gone = host == socket.gethostname() and pid and not _process_alive(pid)
            # Another host's process cannot be checked from here: its part is taken over
            # only when asked to (--resume).
            if status == "running" and not gone and (host == socket.gethostname()
                                                     or not resume):
                raise StoreError(f"part {part}/{parts} of crawl {crawl} is held by process "
                                 f"{pid} on {host}")
            if not resume:
                raise StoreError(f"part {part}/{parts} of crawl {crawl} was started before "
                                 "and did not finish: --resume carries it on")
            await self.backend.execute(
                "UPDATE parts SET status='running', pid=?, host=?, finished_at=NULL "
                "WHERE crawl=? AND part=?", os.getpid(), socket.gethostname(), crawl, part)
            return (sweeps_done or 0) + 1

    async def resume_crawl(self, crawl: int) -> None:
        await self.backend.execute(
            "UPDATE crawls SET status='running', pid=?, host=?, finished_at=NULL WHERE id=?",
            os.getpid(), socket.gethostname(), crawl)

    async def end_crawl(self, crawl: int, status: str, sweeps_done: int,
                        part: int | None = None) -> None:
        """The crawl (or this process's part of it) is over: `complete`, `stopped` or
        `failed`. A partitioned crawl is complete when every part is."""
        await self.flush()
        now = time.time()
        async with self._lock, self.backend.transaction():
            if part is None:
                await self.backend.execute(
                    "UPDATE crawls SET status=?, finished_at=?, sweeps_done=? WHERE id=?",
                    status, now, sweeps_done, crawl)
                return
            await self.backend.execute(
                "UPDATE parts SET status=?, finished_at=?, sweeps_done=? WHERE crawl=? AND part=?",
                status, now, sweeps_done, crawl, part)
            await self._roll_up(crawl, now)

    async def sweep_done(self, crawl: int, sweeps_done: int, part: int | None = None) -> None:
        await self.flush()
        async with self._lock, self.backend.transaction():
            if part is None:
                await self.backend.execute("UPDATE crawls SET sweeps_done=? WHERE id=?",
                                           sweeps_done, crawl)
                return
            await self.backend.execute(
                "UPDATE parts SET sweeps_done=? WHERE crawl=? AND part=?", sweeps_done, crawl,
                part)
            await self._roll_up(crawl, None)

    async def _roll_up(self, crawl: int, now: float | None) -> None:
        """A partitioned crawl's own row from its parts' rows."""
        rows = await self.backend.fetch("SELECT parts, status, sweeps_done FROM parts "
                                        "WHERE crawl=?", crawl)
        parts = rows[0][0]
        everyone = len(rows) == parts
        sweeps = min(row[2] or 0 for row in rows) if everyone else 0
        statuses = {row[1] for row in rows}
        if everyone and statuses == {"complete"}:
            status = "complete"
        elif "running" in statuses or not everyone:
            status = "running"
        else:
            status = "stopped"
        await self.backend.execute(
            "UPDATE crawls SET sweeps_done=?, status=?, finished_at=? WHERE id=?",
            sweeps, status, now if status != "running" else None, crawl)

    async def crawls(self) -> list[CrawlRow]:
        rows = await self.backend.fetch("SELECT id, started_at, finished_at, status, pid, host, "
                                        "settings, sweeps_done FROM crawls ORDER BY id")
        return [CrawlRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6] or "{}"), r[7])
                for r in rows]

    async def latest_unfinished(self) -> CrawlRow | None:
        """The last crawl (not partitioned) whose process is gone before its end."""
        for row in reversed(await self.crawls()):
            if row.settings.get("partition") is None and row.shown_status == "incomplete" \
                    and row.settings.get("kind", "crawl") == "crawl":
                return row
        return None

    # --- rows ----------------------------------------------------------------------------------

    def _queue(self, table: str, row: tuple) -> None:
        self._queued.setdefault(table, []).append(row)
        self._queued_rows += 1
        if self._queued_rows >= FLUSH_ROWS and not self._background:
            task = asyncio.ensure_future(self.flush())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def add_contact(self, crawl: int, sweep: int, ip: str, port: int, family: str,
                    node_id: bytes, found_at: float, referrer: str | None) -> None:
        self._queue("contacts", (crawl, sweep, ip, port, family, node_id, found_at, referrer))

    def add_alias(self, crawl: int, sweep: int, ip: str, port: int, node_id: bytes,
                  referrer: str | None) -> None:
        self._queue("aliases", (crawl, sweep, ip, port, node_id, referrer))

    async def add_intents(self, crawl: int, sweep: int, addresses: list[tuple[str, int]],
                          at: float) -> None:
        """Record that these nodes (IP, port) are about to be queried, durably (committed,
        with whatever else is queued, before this returns), before the queries leave."""
        for ip, port in addresses:
            self._queued.setdefault("intents", []).append((crawl, sweep, ip, port, at))
            self._queued_rows += 1
        await self.flush()

    def add_visit(self, row: dict) -> None:
        self._queue("visits", tuple(
            int(value) if isinstance(value, bool) else value
            for value in (row.get(name) for name in VISIT_COLUMNS)))

    def add_samples(self, crawl: int, ip: str, at: float, infohashes: list[bytes]) -> None:
        for infohash in infohashes:
            self._queue("samples", (crawl, infohash, ip, at))

    def add_edge(self, crawl: int, sweep: int, from_ip: str, to_ip: str, to_port: int,
                 to_id: bytes) -> None:
        self._queue("edges", (crawl, sweep, from_ip, to_ip, to_port, to_id))

    def add_estimate(self, crawl: int, sweep: int, name: str, value: float | None,
                     low: float | None, high: float | None, counts: str, detail: dict) -> None:
        self._queue("estimates", (crawl, sweep, time.time(), name, value, low, high, counts,
                                  json.dumps(detail)))

    def add_zone(self, crawl: int, sweep: int, zone: str, bits: int, found: int,
                 answered: int, skipped: int, reachable: float, listed: float) -> None:
        self._queue("zones", (crawl, sweep, time.time(), zone, bits, found, answered, skipped,
                              reachable, listed))

    async def flush(self) -> None:
        """Commit what is queued, in one transaction."""
        async with self._lock:
            if not self._queued_rows:
                return
            queued, self._queued, self._queued_rows = self._queued, {}, 0
            try:
                async with self.backend.transaction():
                    for table in FLUSH_ORDER:
                        rows = queued.get(table)
                        if rows:
                            await self.backend.executemany(INSERTS[table], rows)
            except BaseException:
                # Put them back (before anything queued meanwhile): a later flush retries.
                for table, rows in queued.items():
                    self._queued[table] = rows + self._queued.get(table, [])
                    self._queued_rows += len(rows)
                raise

    # --- reading back (resume) -----------------------------------------------------------------

    async def current_sweep(self, crawl: int) -> int:
        rows = await self.backend.fetch("SELECT MAX(sweep) FROM contacts WHERE crawl=?", crawl)
        return rows[0][0] or 1

    async def frontier(self, crawl: int, sweep: int,
                       keep: Callable[[bytes], bool] | None = None
                       ) -> tuple[list[tuple], set[tuple[str, int]]]:
        """The contacts of a sweep not visited yet (those `keep` accepts: a partition's),
        and the nodes (IP, port) visited (or whose visit had started when the crawl
        stopped)."""
        visited = {(row[0], row[1]) for row in await self.backend.fetch(
            "SELECT ip, port FROM visits WHERE crawl=? AND sweep=? UNION "
            "SELECT ip, port FROM intents WHERE crawl=? AND sweep=?", crawl, sweep, crawl, sweep)}
        contacts = [row for row in await self.backend.fetch(
            "SELECT ip, port, family, node_id, found_at, referrer FROM contacts "
            "WHERE crawl=? AND sweep=?", crawl, sweep)
            if (row[0], row[1]) not in visited and (keep is None or keep(bytes(row[3])))]
        return contacts, visited

    async def visited_contacts(self, crawl: int, sweep: int,
                               keep: Callable[[bytes], bool] | None = None) -> list[tuple]:
        """The contacts of a sweep already visited (or started): where the walk has been,
        each with whether it answered (those can be asked about stretches of keyspace
        nobody has covered yet)."""
        rows = await self.backend.fetch(
            "SELECT ip, port, family, node_id, found_at, referrer, EXISTS (SELECT 1 FROM "
            "visits v WHERE v.crawl=c.crawl AND v.sweep=c.sweep AND v.ip=c.ip AND "
            "v.port=c.port AND v.outcome='answered') FROM contacts c "
            "WHERE crawl=? AND sweep=? AND EXISTS (SELECT 1 FROM visits v WHERE "
            "v.crawl=c.crawl AND v.sweep=c.sweep AND v.ip=c.ip AND v.port=c.port UNION ALL "
            "SELECT 1 FROM intents i WHERE i.crawl=c.crawl AND i.sweep=c.sweep AND "
            "i.ip=c.ip AND i.port=c.port)",
            crawl, sweep)
        return [row for row in rows if keep is None or keep(bytes(row[3]))]

    async def sample_intervals(self, crawl: int) -> dict[tuple[str, int], float]:
        """When each node (IP, port) may next be asked for samples (its last answer plus
        its interval)."""
        return {(row[0], row[1]): row[2] for row in await self.backend.fetch(
            'SELECT ip, port, MAX(at + "interval") FROM visits WHERE crawl=? AND bep51=1 '
            "GROUP BY ip, port", crawl)}

    async def copy_to_sqlite(self, path: str | Path,
                             progress: Callable[[str, int], None] | None = None) -> int:
        """Every table into a new SQLite file at `path` (what `report` and `export` read),
        column by column as the schema names them, streamed in chunks; returns the rows
        copied."""
        target = _Sqlite(Path(path))
        copied = 0
        try:
            for table in TABLES:
                names = [row[1] for row in target.db.execute(f"PRAGMA table_info({table})")]
                columns = ", ".join(_quoted(name) for name in names)
                insert = f"INSERT INTO {table} ({columns}) VALUES ({','.join('?' * len(names))})"
                async for rows in self.backend.chunks(f"SELECT {columns} FROM {table}"):
                    async with target.transaction():
                        await target.executemany(insert, rows)
                    copied += len(rows)
                    if progress is not None:
                        progress(table, copied)
        finally:
            await target.close()
        return copied


def _quoted(column: str) -> str:
    return f'"{column}"'


@contextlib.contextmanager
def readable_sqlite(target: str | os.PathLike, progress: Callable[[str, int], None] | None = None):
    """A SQLite file `report` and `export` can read for `target`: the file itself, or, for a
    PostgreSQL URL, a copy of every table in a temporary folder (deleted afterwards)."""
    if not is_postgres(target):
        yield Path(target)
        return
    import tempfile

    async def copy(path: Path) -> None:
        store = await CrawlStore.open(target)
        try:
            await store.copy_to_sqlite(path, progress)
        finally:
            await store.backend.close()
    with tempfile.TemporaryDirectory(prefix="mldht-crawl-copy-") as folder:
        path = Path(folder) / "crawl.sqlite"
        asyncio.run(copy(path))
        yield path
