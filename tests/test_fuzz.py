"""Mutated real datagrams through a node's receive path (tools/bench/fuzz.py, small count)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench" / "fuzz.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("fuzz_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_twenty_thousand_mutated_datagrams():
    result = await load_tool().fuzz(20_000, seed=7)
    assert result["seeds"] >= 500  # every fixture capture contributed
    assert result["escaped_exceptions"] == 0
    assert result["malformed_queries_with_tid"] > 50
    assert result["malformed_queries_without_203"] == 0
    assert result["decoded_queries"] > 100  # some mutants stay valid and are answered
    assert result["slowest_ms"] < 1000  # nothing hangs


def test_mutations_differ_from_their_seed():
    tool = load_tool()
    import random

    rng = random.Random(3)
    pool = tool.seeds()
    mutated = [tool.mutate(seed, rng, pool) for seed in pool[:200]]
    assert sum(m != s for m, s in zip(mutated, pool[:200])) >= 190
