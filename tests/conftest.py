"""Shared fixtures, and the loopback-only network guard applied to every test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# The throwaway PostgreSQL server (tools/bench/pgserver.py) serves tests and benchmarks.
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tools" / "bench"))
import netguard  # noqa: E402

netguard.install()


@pytest.fixture(autouse=True)
def own_cache_folder(tmp_path_factory, monkeypatch):
    """Each test its own user cache folder (platformdirs reads XDG_CACHE_HOME, child
    processes inherit it): one test's node cache never seeds another's lookups, and the
    tests never write to the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def loopback_only(tmp_path_factory):
    """Fail any test whose code (or whose child processes) tried to reach a non-loopback address."""
    log = tmp_path_factory.mktemp("netguard") / "violations.log"
    netguard.child_log_path = str(log)
    netguard.violations.clear()
    yield netguard.violations
    found = list(netguard.violations)
    if log.exists():
        found += log.read_text().splitlines()
    netguard.violations.clear()
    if found:
        pytest.fail("non-loopback network use: " + "; ".join(sorted(set(found))), pytrace=False)



@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server of the tests' own (tests/pgserver.py), for the whole session."""
    from pgserver import postgres_server
    with postgres_server() as url:
        yield url


_databases = iter(range(1, 10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def crawl_db(request, tmp_path):
    """Where a crawl database goes: a SQLite path, or a fresh database on the test server."""
    if request.param == "sqlite":
        return str(tmp_path / "crawl.sqlite")
    from pgserver import fresh_database
    return fresh_database(request.getfixturevalue("postgres_url"), f"crawl{next(_databases)}")
