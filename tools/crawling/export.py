"""`crawler.py export`: one table of a crawl database as CSV (with a header) or JSON Lines.

Rows are streamed from SQLite to the output as they are read (a table of millions of visits
never sits in memory); BLOB columns (node ids, infohashes, `v`) are written as lowercase hex,
NULL as an empty CSV field or JSON `null`. The database is opened read only: exporting
while a crawl writes to it is fine (WAL).
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import sys
from pathlib import Path
from typing import TextIO

from .store import TABLES, StoreError

FORMATS = ("csv", "jsonl")
DEFAULT_TABLE = "visits"


class ExportError(StoreError):
    """An unknown table or format (a one-line reason)."""


def open_readonly(db_path: str | Path) -> sqlite3.Connection:
    """The crawl database at `db_path`, read only; never creates a file."""
    path = Path(db_path)
    if not path.is_file():
        raise StoreError(f"no crawl database at {path}")
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
        db.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path} as a crawl database: {exc}") from None
    return db


def table_names(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _cell(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def export(db_path: str | Path, table: str = DEFAULT_TABLE, fmt: str = "csv",
           out_stream: TextIO | None = None) -> int:
    """Write every row of `table` (one of `store.TABLES`) to `out_stream` (stdout by
    default) as `csv` or `jsonl`, in insertion order; return the number of rows written."""
    if table not in TABLES:
        raise ExportError(f"unknown table {table!r}: choose one of {', '.join(TABLES)}")
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out = sys.stdout if out_stream is None else out_stream
    db = open_readonly(db_path)
    try:
        if table not in table_names(db):
            raise ExportError(f"{db_path} has no table {table!r}: is it a crawl database?")
        # The table name is one of TABLES (checked above), never user text in the SQL.
        cursor = db.execute(f"SELECT * FROM {table} ORDER BY rowid")
        columns = [description[0] for description in cursor.description]
        rows = 0
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
            for row in cursor:
                writer.writerow(["" if cell is None else cell for cell in map(_cell, row)])
                rows += 1
        else:
            for row in cursor:
                out.write(json.dumps(dict(zip(columns, map(_cell, row))), ensure_ascii=False))
                out.write("\n")
                rows += 1
        return rows
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {table} from {db_path}: {exc}") from None
    finally:
        db.close()


__all__ = ["DEFAULT_TABLE", "FORMATS", "ExportError", "export", "open_readonly"]
