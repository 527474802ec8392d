"""Mutated real datagrams through a node's receive path (tools/bench/fuzz.py, small count)."""

from __future__ import annotations

import benchtools


async def test_twenty_thousand_mutated_datagrams():
    result = await benchtools.load("fuzz").fuzz(20_000, seed=7)
    assert result["seeds"] >= 500  # every fixture capture contributed
    assert result["escaped_exceptions"] == 0
    assert result["malformed_queries_with_tid"] > 50
    assert result["malformed_queries_without_203"] == 0
    assert result["decoded_queries"] > 100  # some mutants stay valid and are answered
    assert result["slowest_ms"] < 1000  # nothing hangs


def test_mutations_differ_from_their_seed():
    tool = benchtools.load("fuzz")
    import random

    rng = random.Random(3)
    pool = tool.seeds()
    mutated = [tool.mutate(seed, rng, pool) for seed in pool[:200]]
    assert sum(m != s for m, s in zip(mutated, pool[:200])) >= 190


def test_mutants_get_the_same_bytes_with_and_without_the_native_codec():
    result = benchtools.load("fuzz").compare(20_000, seed=5)
    assert result["read_natively"] > 200  # the native reader took part, not only refused
    assert result["replies_read_natively"] > 1000  # and the reply reader
    assert result["answered"][0] > 300
    assert result["differences"] == 0, result["example"]
    assert result["escaped_exceptions"] == 0


def test_the_native_codec_under_address_sanitizer():
    """The comparison again, the codec built with ASan and UBSan (gcc): a read out of bounds
    or undefined behaviour would end the child with the sanitizer's report."""
    result = benchtools.load("fuzz").compare_under_asan(10_000, seed=6)
    assert result["sanitized"]  # the child ran the sanitized build, not the installed one
    assert result["read_natively"] > 100 and result["differences"] == 0
