"""`Engine.status(now)`: one JSON-ready snapshot of a node, for a status page, metrics or a
person reading logs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..clients import describe_version
from ..compact import format_address

if TYPE_CHECKING:
    from .family import Family
    from .interface import EngineParts


def table_status(family: "Family", now: float) -> dict:
    """The routing table of a family, bucket by bucket (depth = shared prefix bits)."""
    table = family.table
    buckets = []
    totals = {"good": 0, "questionable": 0, "bad": 0, "replacements": 0}
    for depth, bucket in enumerate(table.buckets):
        counts = {"good": 0, "questionable": 0, "bad": 0}
        for entry in bucket.nodes:
            counts[entry.state(now).value] += 1
        row = {"depth": depth, **counts, "replacements": len(bucket.replacements),
               "last_changed_ago": round(now - bucket.last_changed, 1)}
        buckets.append(row)
        for key in totals:
            totals[key] += row[key]
    return {"nodes": len(table), **totals, "buckets": buckets}


def _entry(entry, now: float) -> dict:
    client = describe_version(entry.version)
    return {"id": entry.id.hex(), "address": format_address(entry.address),
            "state": entry.state(now).value,
            "v": None if entry.version is None else entry.version.hex(),
            "client": None if client is None else str(client),
            "last_seen_ago": round(now - entry.last_seen, 1),
            "last_response_ago": None if entry.last_response is None
            else round(now - entry.last_response, 1),
            "failures": entry.failures, "secure_id": entry.secure_id}


def table_entries(family: "Family", now: float) -> dict:
    """Every entry of a family's routing table, bucket by bucket: id, address, state, `v`
    (hex, and the client it names), seconds since last heard from, failures, BEP 42."""
    buckets = []
    for depth, bucket in enumerate(family.table.buckets):
        buckets.append({"depth": depth,
                        "last_changed_ago": round(now - bucket.last_changed, 1),
                        "nodes": [_entry(entry, now) for entry in bucket.nodes],
                        "replacements": [_entry(entry, now) for entry in bucket.replacements]})
    return {"node_id": family.identity.node_id.hex(), "buckets": buckets}


def build_status(engine: "EngineParts", now: float) -> dict:
    families = {}
    for family in engine.families:
        families[family.name] = {
            "node_id": family.identity.node_id.hex(),
            "address": format_address(family.address) if family.address else None,
            "external_ip": family.identity.external_ip,
            "routers": [format_address(a) for a in family.routers],
            "table": table_status(family, now),
        }
    transactions = engine.transactions
    operations = [operation.describe(now) for operation in engine.operations()]
    peer_store = engine.peer_store
    return {
        "uptime": round(now - engine.started, 3),
        "read_only": engine.read_only,
        "families": families,
        "counters": engine.stats.as_dict(),
        "queries": {"in_flight": {m: n for m, n in transactions.in_flight.items() if n},
                    "pending": len(transactions.pending), "queued": transactions.queued,
                    "rate": engine.config.query_rate,
                    "per_ip_rate": engine.config.per_ip_query_rate},
        "stores": {"infohashes": len(peer_store), "peers": peer_store.peer_count(),
                   "items": len(engine.item_store)},
        "operations": operations,
        "lookups": [op for op in operations if "target" in op],
        "size_estimate": engine.estimated_size(now).as_dict(),
    }

