"""Replies stay under 1,400 bytes whatever is asked (tools/bench/amplification.py)."""

from __future__ import annotations

import pytest

import benchtools


pytestmark = pytest.mark.network


async def test_worst_case_replies_fit_one_datagram():
    rows = await benchtools.load("amplification").measure()
    assert len(rows) == 8
    sizes = {row["query"]: row["reply_bytes"] for row in rows}
    assert max(sizes.values()) <= 1400, sizes
    assert sizes["get_peers (full swarm)"] > 1000  # the values budget was used, not skipped
    assert all(row["ratio"] < 15 for row in rows), rows
