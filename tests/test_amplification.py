"""Replies stay under 1,400 bytes whatever is asked (tools/bench/amplification.py)."""

from __future__ import annotations

import pytest

import benchtools


pytestmark = pytest.mark.network


async def test_worst_case_replies_fit_one_datagram():
    rows = await benchtools.load("amplification").measure()
    assert len(rows) == 11
    sizes = {row["query"]: row["reply_bytes"] for row in rows}
    assert max(sizes.values()) <= 1400, sizes
    assert sizes["get_peers (full swarm)"] > 1000  # the values budget was used, not skipped
    # BEP 44: a 1000-byte value is served whole (nodes are dropped to make room for it).
    assert sizes["get (1000-byte item, want n4+n6)"] > 1000
    assert sizes["get (1000-byte mutable item)"] > 1100
    # Beyond items, whose size the BEP sets, no reply is 15 times its query.
    assert all(row["ratio"] < 15 for row in rows if "1000-byte" not in row["query"]), rows
