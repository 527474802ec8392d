"""Abuse limits: token buckets, the per-IP limiter and the blocklist."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from mldht.blocklist import Blocklist
from mldht.errors import InvalidInput
from mldht.ratelimit import PerIpLimiter, TokenBucket


def test_token_bucket_rate_and_burst():
    bucket = TokenBucket.full(rate=5, burst=10, now=0.0)
    assert sum(bucket.allow(0.0) for _ in range(20)) == 10  # the burst
    assert not bucket.allow(0.1)
    assert bucket.allow(0.2)  # 0.2 s at 5/s: one token back
    # Sustained: over 10 s, about rate * 10 more.
    allowed = sum(bucket.allow(1.0 + i / 100) for i in range(1000))
    assert 50 <= allowed <= 52 + 10


def test_per_ip_limiter_isolates_sources_and_is_bounded():
    limiter = PerIpLimiter(rate=5, burst=20, max_ips=100)
    flood = sum(limiter.allow("198.51.100.1", i / 10_000) for i in range(10_000))  # 1 s
    assert flood <= 20 + 5 + 1
    assert limiter.allow("198.51.100.2", 1.0)  # another IP is untouched
    assert limiter.dropped == 10_000 - flood
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 2.0)
    assert len(limiter) == 100


def test_blocklist_formats_and_lookups(tmp_path):
    path = tmp_path / "block.txt"
    path.write_text("""# comment
203.0.113.0/24
198.51.100.7   # one address
10.0.0.1-10.0.0.255
Some Evil Corp:192.0.2.10-192.0.2.20
2001:db8::/32
2001:db9::1-2001:db9::ff

""")
    blocklist = Blocklist.from_file(path)
    for ip in ("203.0.113.0", "203.0.113.255", "198.51.100.7", "10.0.0.1", "10.0.0.255",
               "192.0.2.15", "2001:db8::1", "2001:db8:ffff::1", "2001:db9::80",
               "::ffff:203.0.113.9"):
        assert ip in blocklist, ip
    for ip in ("203.0.114.0", "198.51.100.8", "10.0.0.0", "10.0.1.0", "192.0.2.21",
               "2001:dba::1", "2001:db9::100", "not an ip"):
        assert ip not in blocklist, ip


def test_blocklist_bad_lines_are_one_line_errors(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("203.0.113.0/24\n999.1.1.1\n")
    with pytest.raises(InvalidInput, match=r"bad.txt:2: not an IP range"):
        Blocklist.from_file(path)
    with pytest.raises(InvalidInput, match="cannot read blocklist"):
        Blocklist.from_file(tmp_path / "missing.txt")
    with pytest.raises(InvalidInput):
        Blocklist.from_lines(["10.0.0.9-10.0.0.1"])


@given(ranges=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 5000)), max_size=30),
       probes=st.lists(st.integers(0, 2**32 - 1), max_size=30))
def test_blocklist_matches_a_naive_search(ranges, probes):
    import ipaddress

    spans = [(first, min(first + length, 2**32 - 1)) for first, length in ranges]
    lines = [f"{ipaddress.IPv4Address(a)}-{ipaddress.IPv4Address(b)}" for a, b in spans]
    blocklist = Blocklist.from_lines(lines)
    for value in probes + [a for a, _ in spans] + [b for _, b in spans]:
        expected = any(a <= value <= b for a, b in spans)
        assert (str(ipaddress.IPv4Address(value)) in blocklist) == expected
