"""The optional fastbencode backend gives exactly what bencode.py gives: same messages, same
errors (with the same transaction ids), same bytes out, for every datagram of the captures in
fixtures/ and for 20,000 mutations of them."""

from __future__ import annotations

import random

import pytest

import benchtools
from mldht import krpc
from mldht.errors import KrpcDecodeError


def _outcome(data: bytes):
    try:
        message = krpc.decode_message(data)
    except KrpcDecodeError as exc:
        return ("error", str(exc), exc.transaction_id, exc.is_query)
    return ("message", message, krpc.encode_message(message))


def _both(data: bytes):
    results = []
    for backend in ("fastbencode", "bencode.py"):
        krpc.use_codec(backend)
        results.append(_outcome(data))
    return results


@pytest.fixture(autouse=True)
def restore_codec():
    before = krpc.codec_backend()
    yield
    krpc.use_codec(before)


def test_fastbencode_is_installed_for_the_tests():
    krpc.use_codec("fastbencode")  # raises when the test extra was not installed
    assert krpc.codec_backend() == "fastbencode"


def test_backends_agree_on_captured_and_mutated_datagrams():
    fuzz = benchtools.load("fuzz")
    pool = fuzz.seeds()
    assert len(pool) > 500
    rng = random.Random(7)
    datagrams = pool + [fuzz.mutate(rng.choice(pool), rng, pool) for _ in range(20_000)]
    kinds = {"message": 0, "error": 0}
    for data in datagrams:
        fast, pure = _both(data)
        assert fast == pure, data
        kinds[fast[0]] += 1
    assert kinds["message"] > 1000 and kinds["error"] > 1000, kinds


@pytest.mark.parametrize("data", [
    b"d1:ad2:id20:" + b"a" * 20 + b"e1:q4:ping1:t2:aa1:y1:qe",          # canonical
    b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id20:" + b"a" * 20 + b"ee",          # keys unsorted
    b"d1:ad2:id20:" + b"a" * 20 + b"e1:q4:ping1:t2:aa1:t2:bb1:y1:qe",   # a repeated key
    b"d1:ad2:id20:" + b"a" * 20 + b"e1:q4:ping1:t2:aa1:y1:qetrailing",  # junk after it
    b"d1:ad2:id20:" + b"a" * 20 + b"1:xi-0ee1:q4:ping1:t2:aa1:y1:qe",   # -0
])
def test_backends_agree_on_non_canonical_input(data):
    fast, pure = _both(data)
    assert fast == pure
