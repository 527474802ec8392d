"""BEP 43 read-only nodes: they say `ro`=1, answer nothing, and never enter routing tables."""

from __future__ import annotations

import asyncio

import pytest

from mldht import DHTNode, QueryTimeout

pytestmark = pytest.mark.network


async def test_read_only_node_is_served_but_never_routed_to():
    async with DHTNode(("127.0.0.180", 0), bootstrap=[]) as full, \
            DHTNode(("127.0.0.181", 0), bootstrap=[], read_only=True) as reader, \
            DHTNode(("127.0.0.182", 0), bootstrap=[]) as other:
        assert await reader.ping(full.address, timeout=2) == full.node_id  # served
        await other.ping(full.address, timeout=2)
        assert full.stats.queries_received["ping"] == 2
        for _ in range(40):  # a querier enters the table once it answers our ping (bounded)
            if full.routing_table.get(other.address) is not None:
                break
            await asyncio.sleep(0.05)
        assert full.routing_table.get(other.address) is not None
        assert full.routing_table.get(reader.address) is None  # ro=1: never pinged, never in
        with pytest.raises(QueryTimeout):  # a read-only node answers no query
            await full.ping(reader.address, timeout=0.5)
        assert reader.stats.queries_received.get("ping") == 1  # it received it, and kept quiet
