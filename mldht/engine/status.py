"""`Engine.status(now)`: one JSON-ready snapshot of a node, for a status page, metrics or a
person reading logs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..compact import format_address
from ..routing import NodeState

if TYPE_CHECKING:
    from .core import Engine, Family


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


def table_entries(family: "Family", now: float) -> list[dict]:
    """Every main-bucket entry with its state, `v` unknown here, last seen."""
    rows = []
    for depth, bucket in enumerate(family.table.buckets):
        for entry in bucket.nodes:
            rows.append({"depth": depth, "id": entry.id.hex(),
                         "address": format_address(entry.address),
                         "state": entry.state(now).value,
                         "last_seen_ago": round(now - entry.last_seen, 1),
                         "failures": entry.failures, "secure_id": entry.secure_id})
    return rows


def build_status(engine: "Engine", now: float) -> dict:
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


__all__ = ["build_status", "table_entries", "table_status", "NodeState"]
