"""Replies stay under 1,400 bytes whatever is asked (tools/bench/amplification.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench" / "amplification.py"

pytestmark = pytest.mark.network


def load_tool():
    spec = importlib.util.spec_from_file_location("amplification", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_worst_case_replies_fit_one_datagram():
    rows = await load_tool().measure()
    assert len(rows) == 8
    sizes = {row["query"]: row["reply_bytes"] for row in rows}
    assert max(sizes.values()) <= 1400, sizes
    assert sizes["get_peers (full swarm)"] > 1000  # the values budget was used, not skipped
    assert all(row["ratio"] < 15 for row in rows), rows
