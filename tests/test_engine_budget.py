"""The engine's outbound budget (mldht.engine.budget, .transactions) on a fake network
(tests/enginenet.py): waiting for it is never a timeout and never fails a node, the rates
hold on the wire, an overflowing queue fails queries without touching the routing table,
and the budget's timers always move time forward."""

from __future__ import annotations

import random

from alarm import time_limit
from enginenet import EngineNetwork, true_closest
from mldht import NodeConfig, NodeId
from mldht.compact import NodeInfo
from mldht.engine import Engine, OperationDone, OperationFailed
from mldht.errors import QueryNotSent
from mldht.ids import random_id_in_bucket
from mldht.routing import NodeState

K = 8
ROUTER = ("10.0.0.1", 6881)


def random_id(rng: random.Random) -> NodeId:
    return NodeId(rng.getrandbits(160).to_bytes(20, "big"))


def responders_around(net: EngineNetwork, own: NodeId, count: int,
                      rng: random.Random) -> list[Engine]:
    """`count` joined engines on 10.0.0.1... whose ids share 0 to 4 leading bits with `own`,
    at most 4 per bucket: a table around `own` holds every one of them (none waits as a
    replacement, where a failure would go unnoticed)."""
    engines = []
    for index in range(count):
        node_id = random_id_in_bucket(own, index % 5, rng)
        engines.append(net.add((f"10.0.0.{index + 1}", 6881), node_id=node_id,
                               routers=[ROUTER] if index else []))
    handles = [net.start(engine, lambda e, now: e.start_bootstrap(now)) for engine in engines[1:]]
    for engine, handle in zip(engines[1:], handles):
        net.wait(engine, handle)
    return engines


def join_querier(net: EngineNetwork, own: NodeId, config: NodeConfig,
                 responders: list[Engine]) -> Engine:
    """The engine under test, joined, having met every responder (one ping each)."""
    querier = net.add(("10.0.1.1", 6881), node_id=own, config=config, routers=[ROUTER])
    net.wait(querier, net.start(querier, lambda e, now: e.start_bootstrap(now)), limit=600)
    pings = [net.start(querier, lambda e, now, a=net.address_of(r): e.start_ping(a, now))
             for r in responders]
    for handle in pings:
        net.wait(querier, handle, limit=600)
    table = querier.families[0].table
    assert all(table.get(net.address_of(r)) is not None for r in responders)
    return querier


def most_in_window(times: list[float], window: float) -> int:
    """The most of `times` within any closed interval of length `window`."""
    times = sorted(times)
    best = start = 0
    for end, at in enumerate(times):
        while times[start] < at - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# --- (a) waiting in the queue ------------------------------------------------------------------


def test_queries_waiting_for_the_budget_never_time_out_nor_fail_a_node():
    rng = random.Random(71)
    own = random_id(rng)
    net = EngineNetwork(seed=71)
    responders = responders_around(net, own, 20, rng)
    # 20 queries a second in all, 3 a second per IP after 10 (the default): 100 lookups of
    # some 12 queries each wait a minute for it, far past the 4 s query timeout.
    config = NodeConfig(query_rate=20.0, query_burst=5.0)
    querier = join_querier(net, own, config, responders)
    stats = querier.stats
    delayed_before = stats.queries_delayed
    targets = [random_id(rng) for _ in range(100)]
    handles = {net.start(querier, lambda e, now, t=t: e.start_get_peers(t, now, timeout=600.0)): t
               for t in targets}
    assert querier.transactions.queued > 300
    ended = net.wait_all(querier, handles, limit=900.0)
    assert all(isinstance(event, OperationDone) for event in ended.values())
    summaries = [event.result for event in ended.values()]
    assert max(summary.elapsed for summary in summaries) > 40.0  # queries waited that long
    assert stats.queries_delayed - delayed_before > 500
    assert stats.timeouts == 0 and stats.queries_not_sent == 0
    for handle, summary in ((h, e.result) for h, e in ended.items()):
        assert summary.timed_out == 0
        assert [n.id for n in summary.closest] == true_closest(responders, handles[handle])
    table = querier.families[0].table
    for responder in responders:
        entry = table.get(net.address_of(responder))
        assert entry is not None and entry.failures == 0
        assert entry.state(net.now) is NodeState.GOOD


# --- (b) the rates on the wire ----------------------------------------------------------------


def _flood(config: NodeConfig, seed: int, lookups: int = 200):
    """`lookups` get_peers at once from an engine with `config` against 20 responders; the
    queries it sent (all of them, joining included). One-way latencies of 20 to 820 ms:
    some answers come after the soft timeout, and those queries are sent twice."""
    rng = random.Random(seed)
    own = random_id(rng)
    net = EngineNetwork(seed=seed, latency=0.02, jitter=0.8)
    responders = responders_around(net, own, 20, rng)
    querier = join_querier(net, own, config, responders)
    handles = [net.start(querier, lambda e, now: e.start_get_peers(random_id(rng), now,
                                                                   timeout=900.0))
               for _ in range(lookups)]
    ended = net.wait_all(querier, handles, limit=1200.0)
    assert all(isinstance(event, OperationDone) for event in ended.values())
    assert querier.stats.timeouts == 0
    return querier, net.queries_from(querier)


def test_no_ip_gets_more_than_the_per_ip_budget_in_any_10_seconds():
    config = NodeConfig(query_rate=0.0)  # no global limit: only the per-IP one binds
    querier, queries = _flood(config, seed=81)
    bound = config.per_ip_query_burst + 10 * config.per_ip_query_rate
    assert bound == querier.budget.most_in_window(10.0) == 40
    by_ip: dict[str, list[float]] = {}
    for sent in queries:
        by_ip.setdefault(sent.destination[0], []).append(sent.at)
    assert len(by_ip) >= 20 and len(queries) > 1500
    worst = {ip: most_in_window(times, 10.0) for ip, times in by_ip.items()}
    assert max(worst.values()) <= bound, worst
    assert max(worst.values()) >= bound - 2  # the limit was reached: the test had teeth
    assert querier.stats.queries_resent > 0  # resends are charged and counted here too
    # Over 1 s windows the rate is 3 after the burst of 10.
    assert max(most_in_window(times, 1.0) for times in by_ip.values()) <= 10 + 3


def test_the_global_rate_holds_in_any_window():
    config = NodeConfig(query_rate=25.0, query_burst=20.0, per_ip_query_rate=0.0)
    querier, queries = _flood(config, seed=82)
    times = [sent.at for sent in queries]
    assert len(times) > 1500
    for window in (1.0, 10.0, 60.0):
        bound = config.query_burst + window * config.query_rate
        most = most_in_window(times, window)
        assert bound - 2 <= most <= bound, (window, most, bound)


# --- (c) a full queue ----------------------------------------------------------------------------


def test_an_overflowing_queue_fails_queries_with_query_not_sent_and_spares_the_table():
    now = 1000.0
    config = NodeConfig(query_rate=0.01, query_burst=1.0, max_queued_queries=5)
    engine = Engine(now, node_ids={"ipv4": b"\x00" * 20}, config=config, rng=random.Random(2))
    engine.set_address(("10.0.1.1", 6881))
    table = engine.families[0].table
    rng = random.Random(3)
    nodes = [NodeInfo(random_id_in_bucket(engine.node_id, i % 4, rng), f"10.0.0.{i + 1}", 6881)
             for i in range(12)]
    for node in nodes:  # as if each had answered us
        table.heard_from(node, now, responded=True)
    assert len(table) == 12

    def snapshot():
        return sorted((e.address, e.id, e.failures, e.last_response, e.last_query,
                       e.ping_pending, e.state(now)) for e in table)
    before = snapshot()
    handles = [engine.start_ping(node.address, now) for node in nodes]
    assert len(engine.datagrams_to_send(now)) == 1  # the burst of one; 5 wait; 6 fail
    assert engine.transactions.queued == 5
    events = []
    while (event := engine.next_event()) is not None:
        events.append(event)
    assert [e.handle for e in events] == handles[6:]
    assert all(isinstance(e, OperationFailed) and isinstance(e.error, QueryNotSent)
               for e in events)
    assert engine.stats.queries_not_sent == 6 and engine.stats.timeouts == 0
    assert snapshot() == before
    # A lookup whose queries overflow ends (nothing asked) without touching the table either.
    lookup = engine.start_find_node(random_id(rng), now)
    ended = engine.next_event()
    assert isinstance(ended, OperationDone) and ended.handle == lookup
    assert ended.result.queried == 0 and ended.result.timed_out == 0
    assert snapshot() == before


# --- the budget's timers ---------------------------------------------------------------------------


def test_a_binding_budget_never_sets_a_timer_for_now_and_lets_every_query_go():
    """A refill can leave a bucket a hair under one token: its wait is below the clock's
    resolution, and a timer set for `now + wait == now` ran and was set again, forever
    (handle_timer never returned). Both buckets, at clocks near 1e3 and 1e6."""
    for start in (1000.0, 1_000_000.0, 123_456.789):
        for rate in (3.0, 7.0, 100.0, 250.0):
            for per_ip in (False, True):
                now = start
                engine = Engine(now, config=NodeConfig(
                    query_rate=0.0 if per_ip else rate, query_burst=1.0,
                    per_ip_query_rate=rate if per_ip else 0.0, per_ip_query_burst=1.0),
                    rng=random.Random(1))
                engine.set_address(("10.0.1.1", 6881))
                for index in range(20):
                    ip = "10.0.0.2" if per_ip else f"10.0.0.{index + 2}"
                    engine.start_ping((ip, 6881 + index), now, timeout=1e6)
                sent = len(engine.datagrams_to_send(now))
                with time_limit(5.0, "the engine (a hang)"):
                    for _ in range(200):
                        if sent == 20:
                            break
                        when = engine.get_timer()
                        assert when > now, (start, rate, per_ip)
                        now = when
                        engine.handle_timer(now)
                        sent += len(engine.datagrams_to_send(now))
                assert sent == 20, (start, rate, per_ip)
                assert now - start <= 19 / rate + 1e-6


def test_a_lookup_query_waiting_for_the_budget_holds_its_slot_until_it_has_left():
    """A lookup's soft timeout starts when a query leaves, not when it was queued: otherwise
    every query queued behind a tight budget would turn slow at once and the lookup would
    queue alpha more each second, piling up queries nobody has sent yet."""
    rng = random.Random(31)
    config = NodeConfig(query_rate=1.0, query_burst=1.0, lookup_resends=False)
    engine = Engine(1000.0, node_ids={"ipv4": random_id(rng)}, config=config, rng=rng)
    engine.set_address(("10.9.0.1", 6881))
    table = engine.families[0].table
    for index in range(20):  # silent nodes: nothing will ever answer
        table.heard_from(NodeInfo(random_id(rng), f"10.9.1.{index + 1}", 6881), 1000.0,
                         responded=True)
    engine.start_find_node(random_id(rng), 1000.0)
    now = 1000.0
    for _ in range(15):  # 1.5 s of virtual time, the engine's timers run as they fall due
        now += 0.1
        engine.handle_timer(now)
    sent = len(engine.datagrams_to_send(now))
    submitted = sent + engine.transactions.queued
    # One query leaves at t=0 and one at t=1 (the budget); the first turned slow at t=1 and
    # freed one slot: alpha (4) + 1 submitted. Timing slots from the queue gives 4 + 4.
    assert sent == 2, sent
    assert submitted == config.alpha + 1, submitted
