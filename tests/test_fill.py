"""Upkeep fills the extended buckets of a young node (`Upkeep._fill`): one find_node into
an under-filled bucket at a time, while each brings nodes, bounded per refresh period."""

from __future__ import annotations

import random

from mldht.compact import NodeInfo
from mldht.config import NodeConfig
from mldht.engine.core import Engine
from mldht.ids import random_id_in_bucket


def _young_node() -> tuple[Engine, random.Random]:
    rng = random.Random(5)
    engine = Engine(0.0, rng=rng, config=NodeConfig(), node_ids={"ipv4": rng.randbytes(20)})
    family = engine.families[0]
    own = family.identity.node_id
    serial = 0
    # Deep enough (8 buckets past bucket 0) for the farthest buckets to grow; each bucket
    # gets 8 nodes, as a join leaves them.
    for index in range(12):
        for _ in range(8):
            serial += 1
            node = NodeInfo(random_id_in_bucket(own, index, rng), f"198.18.{serial // 250}.{serial % 250 + 1}", 6881)
            family.table.heard_from(node, 0.0, responded=True)
    return engine, rng


def _fill_target_bucket(engine: Engine) -> int | None:
    family = engine.families[0]
    operation = family.filling
    if operation is None or operation.done:
        return None
    return family.table.bucket_index(operation.spec.target)


def test_a_young_node_fills_its_farthest_bucket_while_fills_bring_nodes():
    engine, rng = _young_node()
    family = engine.families[0]
    table = family.table
    assert table.buckets[0].capacity == 128 and len(table.buckets[0].nodes) == 8
    engine.upkeep._fill(family, 1.0)
    assert _fill_target_bucket(engine) == 0  # the farthest first
    engine.upkeep._fill(family, 2.0)  # one at a time: nothing new while it runs
    first = family.filling
    assert _fill_target_bucket(engine) == 0 and family.filling is first
    serial = 5000
    for round_ in range(40):
        family.filling.cancel(3.0 + round_)
        # The fill brought 10 nodes into bucket 0.
        for _ in range(10):
            serial += 1
            table.heard_from(NodeInfo(random_id_in_bucket(family.identity.node_id, 0, rng),
                                      f"198.19.{serial // 250 % 250}.{serial % 250 + 1}", 6881),
                             3.0 + round_, responded=True)
        engine.upkeep._fill(family, 3.5 + round_)
        if _fill_target_bucket(engine) != 0:
            break
    # Bucket 0 got at most 128 / 8 = 16 fills in this period; then bucket 1 was next.
    assert family.fill_memory[0][1] <= 16
    assert len(table.buckets[0].nodes) >= 100
    assert _fill_target_bucket(engine) == 1


def test_a_fill_that_brings_nothing_is_the_last_of_its_period():
    engine, _ = _young_node()
    family = engine.families[0]
    started = []
    for step in range(10):
        engine.upkeep._fill(family, 1.0 + step)
        target = _fill_target_bucket(engine)
        if target is not None:
            started.append(target)
            family.filling.cancel(1.5 + step)  # and it brought no node
    assert started == [0, 1, 2, 3]  # one each for the four extended buckets, then none
    later = 1.0 + engine.config.bucket_refresh
    engine.upkeep._fill(family, later)  # a new period: it tries again
    assert _fill_target_bucket(engine) == 0
