"""`Engine.status(now)`: one JSON-ready snapshot of a node, for a status page, metrics or a
person reading logs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..compact import format_address

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

