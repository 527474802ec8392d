"""100 nodes, 10% datagram loss, 30% of the nodes silenced mid-run (tools/bench/churn.py):
at least 99% of get_peers lookups still find the announced peer."""

from __future__ import annotations

import pytest

import benchtools


pytestmark = pytest.mark.network


async def test_lookups_survive_loss_and_churn():
    report = await benchtools.load("churn").run(nodes=100, lookups=100, kill=0.3, loss=0.1, seed=3)
    assert report["killed"] == 30
    assert report["datagrams_dropped"] > 50  # the loss was really injected
    found = report["before_kill"]["found"] + report["after_kill"]["found"]
    assert found >= 99, report
    assert report["after_kill"]["timeouts_mean"] > report["before_kill"]["timeouts_mean"]
