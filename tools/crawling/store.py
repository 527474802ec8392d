"""Where a crawl goes: SQLite (WAL, batched transactions), several crawls in one database.

The schema (also in the README):

- `crawls`: one row per crawl: `id`, `started_at` / `finished_at` (Unix seconds), `status`
  (`running`, `complete`, `stopped`; a `running` crawl whose process is gone is shown as
  `incomplete`), `pid`, `host`, `settings` (JSON: the command's options), `sweeps_done`,
  `mldht_version`.
- `contacts`: every node a sweep learned of, one per IP per sweep (the first id seen on
  it): `crawl`, `sweep`, `ip`, `port`, `family`, `node_id`, `found_at`, `referrer`
  (`ip:port` of the node that listed it, NULL for the crawler's own table). With `visits`
  it is the frontier a `--resume` carries on from.
- `visits`: one row per node visited: `crawl`, `sweep`, `at`, `ip`, `port`, `family`,
  `node_id` (as listed), `answered_id` (as it answered), `v` (raw), `client`,
  `client_version`, `bep42` (1 when its id is valid for its IP), `rtt` (seconds),
  `outcome` (`answered`, `timeout`, `error`), `error_code`, `queries`, `referrer`,
  `bep51` (1 answered sample_infohashes, 0 refused it, NULL not asked), `num`, `interval`,
  `samples` (count), `neighbours` (nodes it listed).
- `intents`: the nodes a visit was started for, committed before the query leaves: after a
  crash, `--resume` never asks them again, even when the crash lost their answer.
- `aliases`: other ids (or ports) seen on an IP already known this sweep: counted, never
  visited as new nodes.
- `samples`: with `--samples`, each infohash a node sampled (`crawl`, `infohash`, `ip`, `at`).
- `edges`: with `--routing-tables`, who lists whom (`crawl`, `sweep`, `from_ip`, `to_ip`,
  `to_port`, `to_id`).
- `estimates`: each size estimate of a sweep: `name`, `value`, `low`, `high` (95 %),
  `counts` (`reachable` or `alive`), `detail` (JSON).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS crawls (
    id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,
    status TEXT NOT NULL, pid INTEGER, host TEXT, settings TEXT, sweeps_done INTEGER DEFAULT 0,
    mldht_version TEXT);
CREATE TABLE IF NOT EXISTS contacts (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL,
    family TEXT NOT NULL, node_id BLOB NOT NULL, found_at REAL NOT NULL, referrer TEXT,
    PRIMARY KEY (crawl, sweep, ip));
CREATE TABLE IF NOT EXISTS visits (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, at REAL NOT NULL, ip TEXT NOT NULL,
    port INTEGER NOT NULL, family TEXT NOT NULL, node_id BLOB, answered_id BLOB, v BLOB,
    client TEXT, client_version TEXT, bep42 INTEGER, rtt REAL, outcome TEXT NOT NULL,
    error_code INTEGER, queries INTEGER NOT NULL, referrer TEXT, bep51 INTEGER, num INTEGER,
    interval INTEGER, samples INTEGER, neighbours INTEGER,
    PRIMARY KEY (crawl, sweep, ip));
CREATE TABLE IF NOT EXISTS aliases (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL,
    node_id BLOB NOT NULL, referrer TEXT, PRIMARY KEY (crawl, sweep, ip, port, node_id));
CREATE TABLE IF NOT EXISTS intents (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, ip TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (crawl, sweep, ip));
CREATE TABLE IF NOT EXISTS samples (
    crawl INTEGER NOT NULL, infohash BLOB NOT NULL, ip TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (crawl, infohash, ip));
CREATE TABLE IF NOT EXISTS edges (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, from_ip TEXT NOT NULL, to_ip TEXT NOT NULL,
    to_port INTEGER NOT NULL, to_id BLOB NOT NULL, PRIMARY KEY (crawl, sweep, from_ip, to_ip));
CREATE TABLE IF NOT EXISTS estimates (
    crawl INTEGER NOT NULL, sweep INTEGER NOT NULL, at REAL NOT NULL, name TEXT NOT NULL,
    value REAL, low REAL, high REAL, counts TEXT NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS visits_node ON visits (node_id);
"""

TABLES = ("crawls", "contacts", "visits", "intents", "aliases", "samples", "edges",
          "estimates")
VISIT_COLUMNS = ("crawl", "sweep", "at", "ip", "port", "family", "node_id", "answered_id", "v",
                 "client", "client_version", "bep42", "rtt", "outcome", "error_code", "queries",
                 "referrer", "bep51", "num", "interval", "samples", "neighbours")
FLUSH_ROWS = 2000
FLUSH_SECONDS = 1.0


class StoreError(Exception):
    """The database cannot be used (a one-line reason)."""


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


class CrawlStore:
    """A crawl database. Writes are queued and committed in batches (`FLUSH_ROWS` rows or
    `FLUSH_SECONDS`), each batch one transaction: a crash loses at most the last second,
    never the database (WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot use {self.path} as a crawl database: {exc}") from None
        self._queued: dict[str, list[tuple]] = {}
        self._queued_rows = 0
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self.db.close()

    # --- crawls ------------------------------------------------------------------------------

    def begin_crawl(self, settings: dict, version: str) -> int:
        cursor = self.db.execute(
            "INSERT INTO crawls (started_at, status, pid, host, settings, mldht_version) "
            "VALUES (?, 'running', ?, ?, ?, ?)",
            (time.time(), os.getpid(), socket.gethostname(), json.dumps(settings), version))
        return cursor.lastrowid

    def resume_crawl(self, crawl: int) -> None:
        self.db.execute("UPDATE crawls SET status='running', pid=?, host=?, finished_at=NULL "
                        "WHERE id=?", (os.getpid(), socket.gethostname(), crawl))

    def end_crawl(self, crawl: int, status: str, sweeps_done: int) -> None:
        self.flush()
        self.db.execute("UPDATE crawls SET status=?, finished_at=?, sweeps_done=? WHERE id=?",
                        (status, time.time(), sweeps_done, crawl))

    def sweep_done(self, crawl: int, sweeps_done: int) -> None:
        self.flush()
        self.db.execute("UPDATE crawls SET sweeps_done=? WHERE id=?", (sweeps_done, crawl))

    def crawls(self) -> list[CrawlRow]:
        rows = self.db.execute("SELECT id, started_at, finished_at, status, pid, host, settings, "
                               "sweeps_done FROM crawls ORDER BY id").fetchall()
        return [CrawlRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6] or "{}"), r[7])
                for r in rows]

    def latest_unfinished(self) -> CrawlRow | None:
        for row in reversed(self.crawls()):
            if row.shown_status == "incomplete":
                return row
        return None

    # --- rows ----------------------------------------------------------------------------------

    def _queue(self, table: str, row: tuple) -> None:
        self._queued.setdefault(table, []).append(row)
        self._queued_rows += 1
        if self._queued_rows >= FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def add_contact(self, crawl: int, sweep: int, ip: str, port: int, family: str,
                    node_id: bytes, found_at: float, referrer: str | None) -> None:
        self._queue("contacts", (crawl, sweep, ip, port, family, node_id, found_at, referrer))

    def add_alias(self, crawl: int, sweep: int, ip: str, port: int, node_id: bytes,
                  referrer: str | None) -> None:
        self._queue("aliases", (crawl, sweep, ip, port, node_id, referrer))

    def add_intents(self, crawl: int, sweep: int, ips: list[str], at: float) -> None:
        """Record that these nodes are about to be queried, durably (committed now, with
        whatever else is queued), before the queries leave."""
        for ip in ips:
            self._queued.setdefault("intents", []).append((crawl, sweep, ip, at))
            self._queued_rows += 1
        self.flush()

    def add_visit(self, row: dict) -> None:
        self._queue("visits", tuple(row.get(name) for name in VISIT_COLUMNS))

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

    def flush(self) -> None:
        """Commit what is queued, in one transaction."""
        if not self._queued_rows:
            self._last_flush = time.monotonic()
            return
        statements = {
            "contacts": "INSERT OR IGNORE INTO contacts VALUES (?,?,?,?,?,?,?,?)",
            "aliases": "INSERT OR IGNORE INTO aliases VALUES (?,?,?,?,?,?)",
            "visits": f"INSERT OR REPLACE INTO visits VALUES ({','.join('?' * len(VISIT_COLUMNS))})",
            "samples": "INSERT OR IGNORE INTO samples VALUES (?,?,?,?)",
            "intents": "INSERT OR IGNORE INTO intents VALUES (?,?,?,?)",
            "edges": "INSERT OR IGNORE INTO edges VALUES (?,?,?,?,?,?)",
            "estimates": "INSERT INTO estimates VALUES (?,?,?,?,?,?,?,?,?)",
        }
        db = self.db
        db.execute("BEGIN")
        try:
            # Contacts before visits: a resumed crawl never sees a visit of an unknown node.
            for table in ("contacts", "aliases", "intents", "visits", "samples", "edges",
                          "estimates"):
                rows = self._queued.get(table)
                if rows:
                    db.executemany(statements[table], rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._queued.clear()
        self._queued_rows = 0
        self._last_flush = time.monotonic()

    # --- reading back (resume) -----------------------------------------------------------------

    def current_sweep(self, crawl: int) -> int:
        row = self.db.execute("SELECT MAX(sweep) FROM contacts WHERE crawl=?", (crawl,)).fetchone()
        return row[0] or 1

    def frontier(self, crawl: int, sweep: int) -> tuple[list[tuple], set[str]]:
        """The contacts of a sweep not visited yet, and the IPs visited (or whose visit had
        started when the crawl stopped)."""
        visited = {row[0] for row in self.db.execute(
            "SELECT ip FROM visits WHERE crawl=? AND sweep=? UNION "
            "SELECT ip FROM intents WHERE crawl=? AND sweep=?", (crawl, sweep, crawl, sweep))}
        contacts = [row for row in self.db.execute(
            "SELECT ip, port, family, node_id, found_at, referrer FROM contacts "
            "WHERE crawl=? AND sweep=?", (crawl, sweep)) if row[0] not in visited]
        return contacts, visited

    def visited_contacts(self, crawl: int, sweep: int) -> list[tuple]:
        """The contacts of a sweep already visited (or started): where the walk has been."""
        return self.db.execute(
            "SELECT ip, port, family, node_id, found_at, referrer FROM contacts "
            "WHERE crawl=? AND sweep=? AND ip IN (SELECT ip FROM visits WHERE crawl=? AND "
            "sweep=? UNION SELECT ip FROM intents WHERE crawl=? AND sweep=?)",
            (crawl, sweep, crawl, sweep, crawl, sweep)).fetchall()

    def sample_intervals(self, crawl: int) -> dict[str, float]:
        """When each IP may next be asked for samples (its last answer plus its interval)."""
        return {row[0]: row[1] for row in self.db.execute(
            "SELECT ip, MAX(at + interval) FROM visits WHERE crawl=? AND bep51=1 GROUP BY ip",
            (crawl,))}
