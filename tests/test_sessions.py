"""Churn and sessions from repeated measurements (tools/crawling/sessions.py): which runs are
sessions, which are censored, Kaplan-Meier against a hand computation and against a
simulated truth, and the churn between measurements."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from crawling.sessions import (  # noqa: E402
    Session, churn, kaplan_meier, median_length, sessions, survival_at,
)


def test_runs_of_measurements_are_sessions_and_the_last_one_is_censored():
    times = [0.0, 60.0, 120.0, 180.0, 240.0]
    presence = {"a": [0, 1, 2],      # running at the first: unknown start, left out
                "b": [1, 2],         # seen twice: about two gaps
                "c": [2, 3, 4],      # still running at the last: censored
                "d": [1, 3]}         # two sessions of one measurement each
    found = sorted(sessions(presence, times), key=lambda s: (s.length, s.ended))
    assert found == [Session(60.0, True), Session(60.0, True), Session(120.0, True),
                     Session(150.0, False)]
    assert sessions(presence, times[:2]) == []


def test_kaplan_meier_without_censoring_is_the_share_still_running():
    observed = [Session(length, True) for length in (1, 2, 2, 3, 5)]
    curve = kaplan_meier(observed)
    assert [(p.time, round(p.survival, 3)) for p in curve] == \
        [(1, 0.8), (2, 0.4), (3, 0.2), (5, 0.0)]
    assert median_length(curve) == 2 and survival_at(curve, 2.5) == pytest.approx(0.4)
    assert all(p.low <= p.survival <= p.high for p in curve)


def test_kaplan_meier_counts_a_censored_session_at_risk_until_it_stops_being_seen():
    observed = [Session(1, True), Session(2, False), Session(3, True), Session(4, True)]
    curve = kaplan_meier(observed)
    # 4 at risk at 1 (one ends): 0.75; the censored one leaves; 2 at risk at 3: 0.375.
    assert [round(p.survival, 4) for p in curve] == [0.75, 0.375, 0.0]


def test_kaplan_meier_recovers_exponential_sessions_under_censoring():
    """Sessions of mean 10 minutes starting at random over an hour, measured every minute
    for that hour: the curve follows exp(-t / 10 min) despite the censored ones."""
    rng = random.Random(4)
    times = [60.0 * i for i in range(61)]
    presence = {}
    for node in range(4000):
        start = rng.uniform(0, 3600)
        length = rng.expovariate(1 / 600)
        presence[node] = [i for i, t in enumerate(times) if start <= t < start + length]
    curve = kaplan_meier(sessions(presence, times))
    for minutes in (5, 10, 20):
        assert survival_at(curve, minutes * 60) == pytest.approx(math.exp(-minutes / 10),
                                                                 abs=0.04)
    assert 5 * 60 < median_length(curve) < 9 * 60  # ln 2 x 10 min, within a gap


def test_churn_between_measurements():
    presence = {"a": [0, 1], "b": [0], "c": [1], "d": [1, 2]}
    first, second = churn(presence, 3)
    assert (first["before"], first["stayed"], first["left"], first["joined"]) == (2, 1, 1, 2)
    assert first["left_share"] == 0.5 and first["joined_share"] == 1.0
    assert (second["left"], second["joined"]) == (2, 0)
