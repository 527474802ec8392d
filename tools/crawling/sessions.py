"""Churn and session lengths from repeated measurements of the same nodes (the zones of
`crawler.py estimate --every`, or consecutive sweeps): who answered at measurement m and
not at m + 1 (left), who answered at m + 1 and not at m (joined), and how long a node
keeps answering, as a Kaplan-Meier survival curve.

A session is a run of consecutive measurements in which a node answered. One that was
already running at the first measurement has an unknown start and is left out (counting it
would favour long sessions: a long session is more likely to be running at any moment);
one still running at the last measurement is right-censored: it lasted at least that long.
That is the "create-based" method of Stutzbach and Rejaie ("Understanding churn in
peer-to-peer networks", IMC 2006), with Kaplan-Meier (1958) for the censored ones. A session
seen in k consecutive measurements lasted between the k - 1 gaps between them and the k + 1
around them: about k gaps, the length used here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Session:
    length: float
    """Seconds (about the number of measurements it was seen in, times the gap)."""
    ended: bool
    """False: still running at the last measurement (censored)."""


def sessions(presence: dict, times: list[float]) -> list[Session]:
    """The sessions in `presence` (for each node, the indexes of the measurements, at
    `times`, in which it answered) that began after the first measurement."""
    if len(times) < 3:
        return []
    last = len(times) - 1
    found: list[Session] = []
    for seen in presence.values():
        run_start = previous = None
        for index in sorted(set(seen)):
            if previous is not None and index == previous + 1:
                previous = index
                continue
            if run_start is not None:
                found.append(_session(run_start, previous, times, last))
            run_start = previous = index
        if run_start is not None:
            found.append(_session(run_start, previous, times, last))
    return [s for s in found if s is not None]


def _session(first: int, final: int, times: list[float], last: int) -> Session | None:
    if first == 0:
        return None  # already running when measuring began: its start is unknown
    # k measurements: from half a gap before the first to half a gap after the last.
    before = (times[first] - times[first - 1]) / 2
    # Still running at the last measurement: it lasted at least until then.
    after = (times[final + 1] - times[final]) / 2 if final < last else 0.0
    return Session(times[final] - times[first] + before + after, final < last)


@dataclass(frozen=True)
class SurvivalPoint:
    time: float
    survival: float
    low: float
    high: float
    at_risk: int


def kaplan_meier(observed: list[Session]) -> list[SurvivalPoint]:
    """The share of sessions lasting longer than each length at which one ended, with its
    95 % interval (Greenwood's variance on the log-log scale, which stays within 0 and 1)."""
    ordered = sorted(observed, key=lambda s: (s.length, not s.ended))
    at_risk = len(ordered)
    survival, greenwood = 1.0, 0.0
    points: list[SurvivalPoint] = []
    index = 0
    while index < len(ordered):
        length = ordered[index].length
        ended = censored = 0
        while index < len(ordered) and ordered[index].length == length:
            ended += ordered[index].ended
            censored += not ordered[index].ended
            index += 1
        if ended:
            survival *= 1 - ended / at_risk
            if at_risk > ended:
                greenwood += ended / (at_risk * (at_risk - ended))
            points.append(SurvivalPoint(length, survival, *_loglog(survival, greenwood),
                                        at_risk))
        at_risk -= ended + censored
    return points


def _loglog(survival: float, greenwood: float) -> tuple[float, float]:
    if survival <= 0 or survival >= 1 or greenwood <= 0:
        return survival, survival
    spread = 1.96 * math.sqrt(greenwood) / abs(math.log(survival))
    return survival ** math.exp(spread), survival ** math.exp(-spread)


def median_length(curve: list[SurvivalPoint]) -> float | None:
    """The shortest length by which half the sessions had ended (None: fewer had)."""
    for point in curve:
        if point.survival <= 0.5:
            return point.time
    return None


def survival_at(curve: list[SurvivalPoint], length: float) -> float:
    """The estimated share of sessions lasting longer than `length`."""
    value = 1.0
    for point in curve:
        if point.time > length:
            break
        value = point.survival
    return value


def churn(presence: dict, measurements: int) -> list[dict]:
    """Between each measurement and the next: nodes that answered both, only the first
    (left), only the second (joined), as counts and shares of the first."""
    answered = [set() for _ in range(measurements)]
    for node, seen in presence.items():
        for index in seen:
            answered[index].add(node)
    steps = []
    for index in range(measurements - 1):
        before, after = answered[index], answered[index + 1]
        stayed = len(before & after)
        steps.append({"from": index + 1, "to": index + 2, "before": len(before),
                      "after": len(after), "stayed": stayed, "left": len(before) - stayed,
                      "joined": len(after) - stayed,
                      "left_share": round((len(before) - stayed) / len(before), 4)
                      if before else None,
                      "joined_share": round((len(after) - stayed) / len(before), 4)
                      if before else None})
    return steps
