"""Routing tables filled from the simulator's global view, instead of a real bootstrap.

A real join costs every node a few hundred queries; for large networks the simulator can
instead give each node what a long-lived node's table converges to: for every bucket range
(ids sharing exactly i leading bits with its own), up to k nodes drawn at random from the
nodes that really are there, and every node closer than the last full range. The entries go
in through `RoutingTable.heard_from(..., responded=True)`, as if each had just answered.
"""

from __future__ import annotations

import bisect
import random as _random
from typing import Sequence

from ..bep42 import is_secure_id
from ..compact import NodeInfo
from ..ids import ID_BITS
from ..routing import RoutingTable


class Population:
    """The reachable nodes, sorted by id, for range queries over the keyspace."""

    def __init__(self, infos: Sequence[NodeInfo]) -> None:
        ordered = sorted(infos, key=lambda info: info.id)
        self.infos = ordered
        self.ids = [int.from_bytes(info.id, "big") for info in ordered]
        self.all_secure = all(is_secure_id(info.id, info.ip) for info in ordered)
        """Every id matches its IP under BEP 42 (checked once here, not once per table)."""

    def span(self, low: int, size: int) -> tuple[int, int]:
        """Index range of the ids in [low, low + size)."""
        return (bisect.bisect_left(self.ids, low), bisect.bisect_left(self.ids, low + size))


def seed_table(table: RoutingTable, population: Population, rng: _random.Random,
               now: float) -> int:
    """Fill `table` from `population` (see the module docstring); returns the entries offered."""
    own = int.from_bytes(table.own_id, "big")
    offered = 0

    def offer(indices) -> None:
        nonlocal offered
        for index in indices:
            if population.ids[index] != own:
                table.heard_from(population.infos[index], now, responded=True)
                offered += 1

    original_verify = table.verify
    if population.all_secure:
        table.verify = None  # None means "secure": known already, no CRC32C per entry
    try:
        _fill(table, population, own, rng, offer)
    finally:
        table.verify = original_verify
    return offered


def _fill(table: RoutingTable, population: Population, own: int, rng: _random.Random,
          offer) -> None:
    k = table.k
    depth = ID_BITS
    for prefix in range(ID_BITS):  # how deep the table will be: where the rest fits in k
        shift = ID_BITS - prefix
        start, end = population.span((own >> shift) << shift, 1 << shift)
        if end - start <= k + 1:
            depth = prefix + 1
            break
    for prefix in range(ID_BITS):
        shift = ID_BITS - prefix
        # Everything sharing at least `prefix` bits with us: when that is k nodes or fewer
        # (+1: we may be one of them), it all belongs in the deepest bucket, and we are done.
        start, end = population.span((own >> shift) << shift, 1 << shift)
        if end - start <= k + 1:
            offer(range(start, end))
            break
        half = shift - 1  # the half whose next bit differs from ours: exactly `prefix` bits
        start, end = population.span(((own >> half) ^ 1) << half, 1 << half)
        wanted = table.capacity_at(prefix, depth)
        offer(sorted(rng.sample(range(start, end), min(wanted, end - start))))
