"""The sans-I/O engine (mldht.engine) on its own: what it may import, and whole networks of
engines on a fake network with a virtual clock (tests/enginenet.py): joining, lookups,
announces, BEP 44, both families, cancel and close, the size estimate, events, the status
snapshot and the keepers that republish. Nothing here opens a socket."""

from __future__ import annotations

import ast
import json
import math
import random
import statistics
from pathlib import Path

import pytest

import mldht
import importgraph
from enginenet import EngineNetwork, build_network, true_closest
from mldht import NodeConfig, NodeId
from mldht.bep42 import is_secure_id
from mldht.bep44 import Item, KeyPair
from mldht.engine import (
    AnnounceResult, Engine, ItemResult, LookupSummary, OperationDone, OperationFailed,
    PeersFound, PutResult, Renewed,
)
from mldht.engine import events as events_module
from mldht.engine.estimate import KEYSPACE, SizeEstimator
from mldht.engine.events import (
    Event, ExternalIpChanged, NodeAdded, NodeIdChanged, NodeRemoved, QueryReceived,
    QueryTimedOut,
)
from mldht.engine.transactions import Transaction
from mldht.errors import QueryNotSent, QueryTimeout
from mldht.krpc import (
    AnnouncePeer, Ping, Response, decode_message, encode_bencode, encode_message,
)

STORE = NodeConfig().store_nodes
"""How many nodes an announce or put goes to (more than k: see NodeConfig)."""

K = 8


def random_id(rng: random.Random) -> NodeId:
    return NodeId(rng.getrandbits(160).to_bytes(20, "big"))


# --- 1. import discipline ------------------------------------------------------------------

FORBIDDEN = {"asyncio", "socket", "selectors", "time"}
COMPACT_SOCKET_USES = {"inet_pton", "inet_ntop", "AF_INET", "AF_INET6"}
PACKAGE_DIR = importgraph.PACKAGE_DIR
_module_path, _imports, _mldht_targets = (importgraph.module_path, importgraph.imports,
                                           importgraph.mldht_targets)

def _engine_closure() -> dict[str, Path]:
    """Every module of mldht.engine and every mldht module they import, transitively."""
    todo = [f"mldht.engine.{p.stem}" if p.stem != "__init__" else "mldht.engine"
            for p in sorted((PACKAGE_DIR / "engine").glob("*.py"))]
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_path(name)
        assert path is not None, f"cannot find the file of {name}"
        seen[name] = path
        for module, names, _ in _imports(name, path)[0]:
            todo += _mldht_targets(module, names)
    return seen


def _socket_uses(tree: ast.Module) -> list[str]:
    """What a module does with `socket`: `socket.X` attributes, `from socket import X`
    names, and 'bare' for any other use of the module object."""
    aliases = {alias.asname or alias.name for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names if alias.name == "socket"}
    uses = []
    attribute_values = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "socket" and not node.level:
            uses += [alias.name for alias in node.names]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in aliases):
            uses.append(node.attr)
            attribute_values.add(id(node.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in aliases and id(node) not in attribute_values:
            uses.append("bare")
    return uses


def test_the_engine_and_what_it_imports_never_import_io_or_the_clock():
    closure = _engine_closure()
    # The walk really followed the relative imports (not vacuous), and stopped at the engine.
    assert {"mldht.engine.core", "mldht.engine.transactions", "mldht.compact", "mldht.krpc",
            "mldht.routing", "mldht.server", "mldht.bep44", "mldht.config"} <= set(closure)
    assert "mldht.node" not in closure and "mldht.udp" not in closure
    problems = []
    for name, path in sorted(closure.items()):
        imports, tree = _imports(name, path)
        for module, names, line in imports:
            top = module.split(".")[0]
            if top in FORBIDDEN and not (name == "mldht.compact" and top == "socket"):
                problems.append(f"{name}:{line} imports {module}")
        for node in ast.walk(tree):  # no way around the rule by importing by name
            if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
                    and getattr(node.func, "id", getattr(node.func, "attr", None))
                    in ("__import__", "import_module")):
                problems.append(f"{name}:{node.lineno} imports by name")
        if name == "mldht.compact":
            uses = _socket_uses(tree)
            assert uses, "compact.py no longer uses socket: drop its exception here"
            problems += [f"mldht.compact uses socket.{use}" for use in uses
                         if use not in COMPACT_SOCKET_USES]
    assert problems == []


# --- 2. networks of engines -------------------------------------------------------------------


@pytest.fixture(scope="module")
def network():
    """30 engines on 10.0.0.1-30, joined through the first, 20 ms apart one way."""
    return build_network(30, seed=11)


def test_bootstrap_through_one_node_then_find_node_gives_the_true_k_closest(network):
    net, engines = network
    for engine in engines[1:]:
        assert len(engine.families[0].table) >= K
    rng = random.Random(4)
    for trial in range(12):
        target = random_id(rng)
        asker = engines[rng.randrange(len(engines))]
        handle = net.start(asker, lambda e, now: e.start_find_node(target, now))
        summary = net.wait(asker, handle)
        assert isinstance(summary, LookupSummary)
        assert [node.id for node in summary.closest] == true_closest(engines, target,
                                                                     exclude=asker), trial
        assert summary.answered >= K and summary.timed_out == 0


def test_a_fresh_engine_joins_through_one_router_and_finds_the_true_closest():
    net, engines = build_network(40, seed=5, join=False)
    router = net.address_of(engines[0])
    handles = []
    for engine in engines[1:]:  # all at once, as after a power cut
        engine.set_routers([router])
        handles.append(net.start(engine, lambda e, now: e.start_bootstrap(now)))
    for engine, handle in zip(engines[1:], handles):
        joined = net.wait(engine, handle)
        assert joined.table_size >= K and joined.routers_answered == [router]
    rng = random.Random(6)
    for engine in engines[1::7]:
        target = random_id(rng)
        summary = net.wait(engine, net.start(engine, lambda e, now: e.start_find_node(target, now)))
        assert [node.id for node in summary.closest] == true_closest(engines, target,
                                                                     exclude=engine)


def test_announce_then_get_peers_reports_the_peer_then_the_summary(network):
    net, engines = network
    info_hash = random_id(random.Random(12))
    announcer, seeker = engines[3], engines[20]
    result = net.wait(announcer, net.start(
        announcer, lambda e, now: e.start_announce(info_hash, now, port=6881)))
    assert isinstance(result, AnnounceResult)
    assert len(result.announced_to) == STORE and result.failed == 0
    handle = net.start(seeker, lambda e, now: e.start_get_peers(info_hash, now))
    summary = net.wait(seeker, handle)
    events = net.events_of(seeker, handle)
    assert all(isinstance(event, PeersFound) for event in events[:-1]) and len(events) >= 2
    assert events[-1] == OperationDone(handle, summary)
    peers = [peer for event in events[:-1] for peer in event.peers]
    assert peers == [(net.address_of(announcer)[0], 6881)]
    assert isinstance(summary, LookupSummary) and summary.peers == 1
    assert summary.target == info_hash and summary.time_to_first_peer is not None


def test_immutable_put_then_get_from_another_engine(network):
    net, engines = network
    putter, getter = engines[4], engines[25]
    put = net.wait(putter, net.start(putter, lambda e, now: e.start_put_immutable(b"hello", now)))
    assert isinstance(put, PutResult)
    assert len(put.stored_on) == STORE and put.errors == {} and put.timed_out == 0
    target = put.item.target
    got = net.wait(getter, net.start(getter, lambda e, now: e.start_get_item(target, now)))
    assert isinstance(got, ItemResult)
    assert got.item == Item.immutable(b"hello") and got.copies >= 1 and got.invalid == 0
    # A mutable one too: the second put finds seq 1 and puts seq 2.
    keys = KeyPair.generate()
    for value in (b"one", b"two"):
        net.wait(putter, net.start(putter, lambda e, now: e.start_put_mutable(keys, value, now)))
    got = net.wait(getter, net.start(getter, lambda e, now: e.start_get_item(
        Item.mutable(keys, b"x", 1).target, now)))
    assert got.item.value == b"two" and got.item.seq == 2


def test_dual_family_engines_merge_the_peers_of_both_families_once():
    net, engines = build_network(24, seed=7, ipv6=True)
    for engine in engines[1:]:
        assert [len(f.table) >= K for f in engine.families] == [True, True]
    info_hash = random_id(random.Random(8))
    announcers = engines[2], engines[9]
    for announcer in announcers:
        result = net.wait(announcer, net.start(
            announcer, lambda e, now: e.start_announce(info_hash, now, port=7000)))
        families = {":" in node.ip for node in result.announced_to}
        assert families == {False, True} and len(result.announced_to) == 2 * STORE
    seeker = engines[17]
    handle = net.start(seeker, lambda e, now: e.start_get_peers(info_hash, now))
    summary = net.wait(seeker, handle)
    events = net.events_of(seeker, handle)
    assert [type(e) for e in events[-1:]] == [OperationDone]  # one end, for both families
    assert all(isinstance(event, PeersFound) for event in events[:-1])
    peers = [peer for event in events[:-1] for peer in event.peers]
    expected = {(net.address_of(a, ipv6=v6)[0], 7000) for a in announcers for v6 in (False, True)}
    assert sorted(peers) == sorted(expected)  # each once, over both families' lookups
    assert summary.peers == 4
    # The summary is one for both lookups: the k closest of each family, by distance.
    assert sum(":" in node.ip for node in summary.closest) == K
    assert sum(":" not in node.ip for node in summary.closest) == K
    distances = [node.id.distance(info_hash) for node in summary.closest]
    assert distances == sorted(distances)
    ipv4_closest = [node.id for node in summary.closest if ":" not in node.ip]
    assert ipv4_closest == true_closest(engines, info_hash, exclude=seeker)
    ipv6_closest = [node.id for node in summary.closest if ":" in node.ip]
    assert ipv6_closest == true_closest(engines, info_hash, exclude=seeker, family="ipv6")


def _timers_of(engine: Engine, owners: set[int]) -> list:
    """Live timers of the engine that call back one of `owners` (by id) or a transaction
    they own."""
    found = []
    for _, _, timer in engine.timers._heap:
        if timer.cancelled:
            continue
        target = getattr(timer.callback, "__self__", None)
        txs = [arg for arg in timer.args if isinstance(arg, Transaction)]
        if id(target) in owners or any(id(tx.owner) in owners for tx in txs):
            found.append(timer)
    return found


def _open_transactions_of(engine: Engine, owners: set[int]) -> list:
    transactions = engine.transactions
    queued = [tx for queue in transactions._queues.values() for tx in queue]
    return [tx for tx in list(transactions.pending.values()) + queued
            if id(tx.owner) in owners]


def test_cancel_ends_an_operation_without_an_event_and_leaves_no_timer_of_it(network):
    net, engines = network
    engine = engines[6]
    rng = random.Random(13)
    lookup = net.start(engine, lambda e, now: e.start_get_peers(random_id(rng), now))
    announce = net.start(engine, lambda e, now: e.start_announce(random_id(rng), now, port=1))
    ping = net.start(engine, lambda e, now: e.start_ping(net.address_of(engines[7]), now))
    operations = {op.handle: op for op in engine.operations()}
    net.run_for(0.03)  # queries out (answers take 40 ms): transaction and lookup timers set
    owners = {}
    for handle in (lookup, announce, ping):
        operation = operations[handle]
        owners[handle] = {id(operation)} | {id(run) for run in getattr(operation, "runs", [])}
        assert _timers_of(engine, owners[handle]) and _open_transactions_of(engine, owners[handle])
    for handle in (lookup, announce, ping):
        engine.cancel(handle, net.now)
        net.pump(engine)
        assert _timers_of(engine, owners[handle]) == []
        assert _open_transactions_of(engine, owners[handle]) == []
        assert handle not in {op.handle for op in engine.operations()}
    engine.cancel(12345, net.now)  # an unknown handle: nothing
    net.run_for(60.0)
    assert [e for h in (lookup, announce, ping) for e in net.events_of(engine, h)] == []
    assert engine.stats.timeouts == 0


def test_close_ends_every_operation_with_operation_failed_and_leaves_no_timer():
    net, engines = build_network(12, seed=3)
    engine = engines[5]
    rng = random.Random(14)
    handles = [
        net.start(engine, lambda e, now: e.start_find_node(random_id(rng), now)),
        net.start(engine, lambda e, now: e.start_get_peers(random_id(rng), now)),
        net.start(engine, lambda e, now: e.start_announce(random_id(rng), now, port=1)),
        net.start(engine, lambda e, now: e.start_ping(("10.9.9.9", 6881), now)),
        net.start(engine, lambda e, now: e.start_keep_announced(random_id(rng), now, port=1)),
        net.start(engine, lambda e, now: e.start_put_immutable(b"v", now)),
    ]
    net.run_for(0.03)
    assert engine.get_timer() is not None and len(engine.operations()) >= len(handles)
    engine.close(net.now)
    net.pump(engine)
    ends = [net.outcome(engine, handle) for handle in handles]
    assert all(isinstance(end, OperationFailed) for end in ends), ends
    assert all(isinstance(end.error, QueryNotSent) for end in ends)
    assert engine.operations() == [] and engine.get_timer() is None
    assert engine.datagrams_to_send(net.now) == []
    engine.close(net.now)  # twice: nothing more
    assert engine.next_event() is None
    handle = engine.start_find_node(random_id(rng), net.now)  # after close: fails at once
    assert engine.datagrams_to_send(net.now) == [] and engine.get_timer() is None
    failed = engine.next_event()
    assert isinstance(failed, (OperationFailed, OperationDone)) and failed.handle == handle


# --- 4. the size estimate --------------------------------------------------------------------


def _closest_distances_exact(n: int, k: int, rng: random.Random) -> list[int]:
    """The k smallest XOR distances from a random target to n uniform random ids."""
    target = rng.getrandbits(160)
    return sorted(rng.getrandbits(160) ^ target for _ in range(n))[:k]


def _closest_distances(n: int, k: int, rng: random.Random) -> list[int]:
    """The same in distribution without drawing n ids: the k lowest order statistics of n
    uniforms are S_i / S_{n+1} with S the partial sums of exponentials, and S_{n+1} is S_k
    plus a Gamma(n + 1 - k) draw."""
    sums, total = [], 0.0
    for _ in range(k):
        total += rng.expovariate(1.0)
        sums.append(total)
    whole = total + rng.gammavariate(n + 1 - k, 1.0)
    return [int(s / whole * KEYSPACE) for s in sums]


@pytest.mark.parametrize("n", [1_000, 100_000, 10_000_000])
def test_the_size_estimate_is_within_a_few_standard_errors(n):
    rng = random.Random(n)
    draw = _closest_distances_exact if n <= 1000 else _closest_distances
    estimator = SizeEstimator(K)
    for _ in range(300):  # the window keeps the last 256
        estimator.record(draw(n, K, rng))
    estimate = estimator.estimate()
    assert estimate.lookups == 256
    # b = sum(i * d_i) of one lookup is a sum of exponential spacings: its coefficient of
    # variation is sqrt(5916) / 204 = 37.7 % (k = 8); pooled over 256, 37.7 / 16 = 2.4 %.
    assert 0.018 * n < estimate.standard_error < 0.03 * n, estimate
    assert abs(estimate.size - n) < 3.5 * estimate.standard_error, estimate
    low, high = estimate.interval95
    assert low < estimate.size < high
    json.dumps(estimate.as_dict())


@pytest.mark.parametrize("n", [1_000, 100_000, 10_000_000])
def test_the_reported_standard_error_matches_the_spread_of_repeated_estimates(n):
    rng = random.Random(n + 1)
    sizes, errors = [], []
    for _ in range(60):
        estimator = SizeEstimator(K)
        for _ in range(256):
            estimator.record(_closest_distances(n, K, rng))
        estimate = estimator.estimate()
        sizes.append(estimate.size)
        errors.append(estimate.standard_error)
    spread = statistics.stdev(sizes)
    reported = statistics.fmean(errors)
    # 60 repetitions know the spread to about 9 %.
    assert 0.75 < reported / spread < 1.33, (reported, spread)
    assert abs(statistics.fmean(sizes) - n) < 3 * spread / math.sqrt(len(sizes))


def test_lookups_with_fewer_than_k_closest_nodes_are_not_counted():
    rng = random.Random(1)
    estimator = SizeEstimator(K)
    estimator.record(_closest_distances(1000, K - 1, rng))
    estimator.record([])
    assert estimator.estimate().lookups == 0 and estimator.estimate().size == 0
    assert math.isinf(estimator.estimate().standard_error)
    estimator.record(_closest_distances(1000, K, rng))
    estimator.record(_closest_distances(1000, K, rng)[:K - 1])
    assert estimator.estimate().lookups == 1 and estimator.estimate().size > 0


def test_the_engine_estimates_a_simulated_network_of_200():
    net, engines = build_network(200, seed=21)
    engine = engines[-1]
    rng = random.Random(22)
    for _ in range(100):
        target = random_id(rng)
        net.wait(engine, net.start(engine, lambda e, now: e.start_find_node(target, now)))
    estimate = engine.estimated_size()
    print(f"estimated size of a 200-node network: {estimate.size:.0f} "
          f"+- {estimate.standard_error:.0f} from {estimate.lookups} lookups")
    assert estimate.lookups >= 100
    assert 140 < estimate.size < 260, estimate


# --- 5. events ----------------------------------------------------------------------------------


def _lone_engine(**config) -> Engine:
    engine = Engine(1000.0, node_ids={"ipv4": b"\x11" * 20}, config=NodeConfig(**config),
                    rng=random.Random(1))
    engine.set_address(("10.0.0.1", 6881))
    return engine


def _ping_datagram(tid: bytes, sender: bytes) -> bytes:
    return encode_bencode({b"t": tid, b"y": b"q", b"q": b"ping", b"a": {b"id": sender}})


def _drain(engine: Engine) -> list[Event]:
    events = []
    while (event := engine.next_event()) is not None:
        events.append(event)
    return events


def test_queries_answered_on_the_quick_path_are_observed():
    engine = _lone_engine()
    engine.observing = True

    def full_path(*args):
        raise AssertionError("a plain ping or find_node must be answered on the quick path")
    engine.families[0].handler.handle = full_path
    engine.receive_datagram(_ping_datagram(b"p1", b"\x05" * 20), ("10.0.0.9", 7000), 1000.5)
    find = encode_bencode({b"t": b"f1", b"y": b"q", b"q": b"find_node",
                           b"a": {b"id": b"\x05" * 20, b"target": b"\x33" * 20}, b"v": b"XX01"})
    engine.receive_datagram(find, ("10.0.0.9", 7000), 1000.6)
    replies = [decode_message(data) for data, _ in engine.datagrams_to_send(1000.6)]
    assert [r.transaction_id for r in replies if isinstance(r, Response)] == [b"p1", b"f1"]
    received = [e for e in _drain(engine) if isinstance(e, QueryReceived)]
    assert [(e.at, e.method, e.source, e.sender_id, e.target, e.version) for e in received] == [
        (1000.5, "ping", ("10.0.0.9", 7000), b"\x05" * 20, None, None),
        (1000.6, "find_node", ("10.0.0.9", 7000), b"\x05" * 20, b"\x33" * 20, b"XX01")]
    assert engine.stats.events_dropped == 0


def _answer(engine: Engine, sender_id: bytes, source, now: float) -> None:
    """Answer the engine's last query with a plain response from `sender_id`."""
    (data, address), = engine.datagrams_to_send(now)
    assert address == source
    tid = decode_message(data).transaction_id
    engine.receive_datagram(encode_message(Response(transaction_id=tid, sender_id=NodeId(
        sender_id))), source, now)


def test_nodes_entering_and_leaving_the_table_are_observed():
    engine = _lone_engine()
    engine.observing = True
    remote = ("10.0.0.2", 6881)
    first, second = NodeId(b"\x81" * 20), NodeId(b"\x82" * 20)
    engine.start_ping(remote, 1001.0)
    _answer(engine, first, remote, 1001.1)
    engine.start_ping(remote, 1002.0)
    _answer(engine, second, remote, 1002.1)  # the node came back with another id
    changes = [(type(e).__name__, e.node.id, e.node.address, e.at) for e in _drain(engine)
               if isinstance(e, (NodeAdded, NodeRemoved))]
    # `at` is when the change happened: the old id leaves when the new one answers.
    assert changes == [("NodeAdded", first, remote, 1001.1), ("NodeRemoved", first, remote, 1002.1),
                       ("NodeAdded", second, remote, 1002.1)]


def test_a_timeout_is_observed_and_fails_the_query():
    engine = _lone_engine(query_timeout=3.0)
    engine.observing = True
    silent = ("10.0.0.3", 6881)
    handle = engine.start_ping(silent, 1001.0)
    assert len(engine.datagrams_to_send(1001.0)) == 1
    engine.handle_timer(1003.9)
    assert _drain(engine) == []
    engine.handle_timer(1004.0)
    events = _drain(engine)
    assert [type(e) for e in events] == [OperationFailed, QueryTimedOut]
    assert isinstance(events[0].error, QueryTimeout) and events[0].handle == handle
    assert (events[1].at, events[1].method, events[1].address) == (1004.0, "ping", silent)
    assert engine.stats.timeouts == 1


def _ping_from_many(engine: Engine, count: int) -> None:
    for index in range(count):
        engine.receive_datagram(_ping_datagram(b"t%d" % index, bytes([index + 1]) * 20),
                                (f"10.0.1.{index + 1}", 6881), 1001.0 + index / 100)


def test_the_event_buffer_is_bounded_and_counts_what_it_drops():
    engine = _lone_engine(max_events=5)
    engine.observing = True
    _ping_from_many(engine, 20)
    assert len(engine.datagrams_to_send(1002.0)) >= 20  # every ping answered all the same
    events = _drain(engine)
    assert [e.source[0] for e in events] == [f"10.0.1.{i}" for i in range(16, 21)]
    assert engine.stats.events_dropped == 15


def test_no_observation_is_made_while_nobody_observes(network):
    engine = _lone_engine(max_events=5)
    _ping_from_many(engine, 20)
    assert _drain(engine) == [] and engine.stats.events_dropped == 0
    # Nor from a whole lookup: only its operation events.
    net, engines = network
    seeker = engines[9]
    assert not seeker.observing
    before = len(net.events[id(seeker)])
    handle = net.start(seeker, lambda e, now: e.start_find_node(b"\x42" * 20, now))
    net.wait(seeker, handle)
    net.run_for(5.0)
    new = [seen.event for seen in net.events[id(seeker)][before:]]
    assert [type(e) for e in new] == [OperationDone] and seeker.stats.events_dropped == 0


def _event_classes() -> set[type]:
    return {value for value in vars(events_module).values()
            if isinstance(value, type) and issubclass(value, Event) and value is not Event}


def test_every_kind_of_event_is_json_serialisable():
    """A network on several /24s, one engine observing at a public address (so that its
    external IP is voted and it moves to a BEP 42 id), doing everything once."""
    net, engines = build_network(40, seed=31, ip_of=lambda i: f"10.{i + 1}.0.1")
    # k-node buckets: 40 nodes would all fit the extended table's wide ones, and a full
    # bucket is needed to see a node removed
    watcher = net.add(("198.51.100.7", 6881), fixed_id=False,
                      routers=[net.address_of(engines[0])],
                      config=NodeConfig(extended_routing_table=False))
    watcher.observing = True
    net.wait(watcher, net.start(watcher, lambda e, now: e.start_bootstrap(now)))
    other = engines[3]
    rng = random.Random(32)
    info_hash = random_id(rng)
    keys = KeyPair.generate()
    operations = [
        lambda e, now: e.start_announce(info_hash, now, port=6881),
        lambda e, now: e.start_get_peers(info_hash, now, scrape=True),
        lambda e, now: e.start_find_node(random_id(rng), now),
        lambda e, now: e.start_ping(net.address_of(other), now),
        lambda e, now: e.start_sample_infohashes(net.address_of(other), now),
        lambda e, now: e.start_put_immutable(b"item", now),
        lambda e, now: e.start_get_item(Item.immutable(b"item").target, now),
        lambda e, now: e.start_put_mutable(keys, {b"a": [1, b"b"]}, now, salt=b"s"),
        lambda e, now: e.start_query(net.address_of(other), AnnouncePeer(
            transaction_id=b"", sender_id=e.node_id, info_hash=info_hash, port=1,
            token=b"forged"), now),
        lambda e, now: e.start_ping(("10.99.0.1", 6881), now),  # nobody there: a timeout
        lambda e, now: e.start_query(net.address_of(other), Ping(
            transaction_id=b"", sender_id=e.node_id), now),  # its result: the Response
    ]
    for start in operations:
        handle = net.start(watcher, start)
        net.run_while(lambda: net.outcome(watcher, handle) is None, 60.0)
    keeper = net.start(watcher, lambda e, now: e.start_keep_announced(info_hash, now, port=1))
    net.run_while(lambda: not any(isinstance(e, Renewed) for e in net.events_of(watcher, keeper)),
                  60.0)
    for _ in range(10):  # meet the whole network: full buckets, replacements that answered
        target = random_id(rng)
        net.wait(watcher, net.start(watcher, lambda e, now: e.start_find_node(target, now)))
    # A node of a full bucket of the watcher's table stops answering: once questionable it
    # is pinged, fails twice and a replacement that answered takes its place.
    table = watcher.families[0].table
    full = next(b for b in table.buckets if len(b.nodes) == b.capacity
                and any(r.last_response is not None for r in b.replacements))
    net.down.add(full.nodes[0].address)
    net.run_for(20 * 60.0)
    for engine in engines:  # the nodes' own observations too
        engine.observing = True
    net.wait(other, net.start(other, lambda e, now: e.start_find_node(random_id(rng), now)))
    net.pump(other)
    seen = [s.event for engine in [watcher, *engines] for s in net.events[id(engine)]]
    assert _event_classes() <= {type(event) for event in seen}
    assert any(isinstance(e, ExternalIpChanged) and e.ip == "198.51.100.7" for e in seen)
    assert any(isinstance(e, NodeIdChanged) for e in seen)
    family = json.loads(json.dumps(watcher.status(net.now)))["families"]["ipv4"]
    assert family["external_ip"] == "198.51.100.7"
    assert family["node_id"] == watcher.node_id.hex()
    assert is_secure_id(watcher.node_id, "198.51.100.7")  # the id it moved to (BEP 42)
    for event in seen:
        text = json.dumps(event.as_dict())
        assert json.loads(text)["kind"] == event.kind


# --- 6. status ---------------------------------------------------------------------------------


def test_status_is_a_json_snapshot_of_the_whole_engine():
    # k-node buckets, so that 40 nodes fill some and their replacement caches show
    net, engines = build_network(40, seed=41, ipv6=True,
                                 config=NodeConfig(extended_routing_table=False))
    engine = engines[8]
    info_hash = random_id(random.Random(42))
    net.wait(engines[2], net.start(engines[2], lambda e, now: e.start_announce(
        info_hash, now, port=6881)))
    for dead in engines[20:]:  # half the network gone: lookups wait on them
        for address in net.addresses[id(dead)]:
            net.down.add(address)
    handle = net.start(engine, lambda e, now: e.start_get_peers(info_hash, now))
    net.run_for(0.1)
    status = engine.status(net.now)
    status = json.loads(json.dumps(status))
    assert status["uptime"] == pytest.approx(net.now - engine.started, abs=1e-3)
    for name, ipv6 in (("ipv4", False), ("ipv6", True)):
        family = status["families"][name]
        ours = engine.family(name)
        assert family["node_id"] == ours.node_id.hex()
        ip, port = net.address_of(engine, ipv6)
        assert family["address"] == (f"[{ip}]:{port}" if ipv6 else f"{ip}:{port}")
        assert "external_ip" in family
        table = family["table"]
        assert table["nodes"] == len(ours.table) >= K
        assert len(table["buckets"]) == len(ours.table.buckets)
        for key in ("good", "questionable", "bad", "replacements"):
            assert table[key] == sum(row[key] for row in table["buckets"])
        assert table["good"] + table["questionable"] + table["bad"] == table["nodes"]
        assert [row["depth"] for row in table["buckets"]] == list(range(len(table["buckets"])))
        for row, bucket in zip(table["buckets"], ours.table.buckets):
            states = [entry.state(net.now).value for entry in bucket.nodes]
            assert (row["good"], row["questionable"], row["bad"], row["replacements"]) == (
                states.count("good"), states.count("questionable"), states.count("bad"),
                len(bucket.replacements))
        assert any(row["replacements"] for row in table["buckets"])
    counters = status["counters"]
    assert counters["queries_sent"] == engine.stats.queries_sent > 0
    assert counters["datagrams_received"] == engine.stats.datagrams_received
    lookups = [op for op in status["operations"] if op["handle"] == handle]
    assert len(lookups) == 1
    assert [op["handle"] for op in status["lookups"]] == [
        op["handle"] for op in status["operations"] if "target" in op]  # lookups only
    assert handle in [op["handle"] for op in status["lookups"]]
    lookup, = lookups
    assert lookup["kind"] == "get_peers" and lookup["target"] == info_hash.hex()
    assert lookup["queried"] > 0 and lookup["answered"] > 0
    assert lookup["families"] == ["ipv4", "ipv6"] and lookup["purpose"] == "user"
    assert status["queries"]["pending"] == len(engine.transactions.pending) > 0
    assert set(status["size_estimate"]) >= {"size", "standard_error", "lookups"}
    holder = next(e for e in engines if len(e.peer_store))
    stores = json.loads(json.dumps(holder.status(net.now)))["stores"]
    assert stores["infohashes"] >= 1 and stores["peers"] >= 1 and "items" in stores


# --- 7. keepers ----------------------------------------------------------------------------------


def _renewals(net: EngineNetwork, engine: Engine, handle: int) -> list:
    return [seen for seen in net.events[id(engine)]
            if isinstance(seen.event, Renewed) and seen.event.handle == handle]


def _queries_about(net: EngineNetwork, engine: Engine, key: bytes, since: float) -> list:
    found = []
    for sent in net.queries_from(engine):
        if sent.at < since:
            continue
        arguments = sent.decoded().get(b"a", {})
        if key in (arguments.get(b"info_hash"), arguments.get(b"target")):
            found.append(sent)
    return found


def test_keep_announced_announces_every_interval_until_cancelled():
    net, engines = build_network(16, seed=51)
    keeper_engine, seeker = engines[4], engines[12]
    config = keeper_engine.config
    interval, jitter = config.reannounce_interval, config.republish_jitter
    assert config.peer_lifetime == 1800.0 and interval == 900.0
    info_hash = random_id(random.Random(52))
    started = net.now
    handle = net.start(keeper_engine, lambda e, now: e.start_keep_announced(
        info_hash, now, port=6881))
    peer = (net.address_of(keeper_engine)[0], 6881)

    def found() -> list:
        lookup = net.start(seeker, lambda e, now: e.start_get_peers(info_hash, now))
        net.wait(seeker, lookup)
        return [p for e in net.events_of(seeker, lookup) if isinstance(e, PeersFound)
                for p in e.peers]

    for minutes in (35, 65, 95, 125):  # the peer lifetime is 30 minutes
        net.run_until(started + minutes * 60.0)
        assert found() == [peer], minutes
    renewals = _renewals(net, keeper_engine, handle)
    assert len(renewals) == 9  # at 0, 15, ... 120 minutes, give or take the jitter
    for seen in renewals:
        assert isinstance(seen.event.result, AnnounceResult)
        assert len(seen.event.result.announced_to) == min(STORE, len(engines) - 1)
    times = [seen.at for seen in renewals]
    assert times[0] - started < 2.0
    for before, after in zip(times, times[1:]):
        assert interval * (1 - jitter) <= after - before <= interval * (1 + jitter) + 2.0
    assert len({round(b - a) for a, b in zip(times, times[1:])}) > 1  # jittered
    assert [op.kind for op in keeper_engine.operations() if op.handle == handle] == [
        "keep_announced"]

    keeper_engine.cancel(handle, net.now)
    cancelled = net.now
    net.pump(keeper_engine)
    net.run_for(45 * 60.0)
    assert _queries_about(net, keeper_engine, info_hash, cancelled) == []
    assert len(_renewals(net, keeper_engine, handle)) == 9
    assert [op for op in keeper_engine.operations() if op.handle == handle] == []
    assert found() == []  # nobody announced it again: it expired


def test_keep_item_puts_again_every_interval_until_cancelled():
    config = NodeConfig(item_lifetime=300.0)
    net, engines = build_network(16, seed=61, config=config)
    keeper_engine, getter = engines[3], engines[11]
    item = Item.immutable(b"kept for good")
    started = net.now
    handle = net.start(keeper_engine, lambda e, now: e.start_keep_item(item, now, interval=60.0))

    def found() -> bool:
        lookup = net.start(getter, lambda e, now: e.start_get_item(item.target, now))
        return net.wait(getter, lookup).item == item

    for minutes in (6, 12, 18):  # nodes forget an item after 5 minutes here
        net.run_until(started + minutes * 60.0)
        assert found(), minutes
    renewals = _renewals(net, keeper_engine, handle)
    assert 17 <= len(renewals) <= 21
    times = [seen.at for seen in renewals]
    for before, after in zip(times, times[1:]):
        assert 54.0 <= after - before <= 66.0 + 2.0
    for seen in renewals:
        assert isinstance(seen.event.result, PutResult) and len(seen.event.result.stored_on) == min(STORE, len(engines) - 1)

    # Cancelled in the middle of a round: that round stops too.
    keeper = next(op for op in keeper_engine.operations() if op.handle == handle)
    net.run_while(lambda: keeper.round is None, 70.0)
    round_started = net.now
    net.run_for(0.05)
    assert keeper.round is not None
    assert _queries_about(net, keeper_engine, item.target, round_started)
    keeper_engine.cancel(handle, net.now)
    cancelled = net.now
    rounds = len(_renewals(net, keeper_engine, handle))
    net.run_for(8 * 60.0)
    assert _queries_about(net, keeper_engine, item.target, cancelled) == []
    assert len(_renewals(net, keeper_engine, handle)) == rounds
    assert not found()


def test_the_size_estimate_forgets_lookups_older_than_its_max_age():
    """A node that joined a small network that grew must not keep counting the lookups it
    made then: only the last hour's count."""
    rng = random.Random(5)
    estimator = SizeEstimator(K, max_age=3600.0)
    for _ in range(100):
        estimator.record(_closest_distances(20, K, rng), now=0.0)       # back when it was small
    for _ in range(100):
        estimator.record(_closest_distances(10_000, K, rng), now=5000.0)
    everything = estimator.estimate()
    recent = estimator.estimate(now=5000.0)
    assert recent.lookups == 100 and everything.lookups == 200
    assert abs(recent.size - 10_000) < 4 * recent.standard_error, recent
    assert everything.size < 1000  # the old lookups drag the pooled estimate down
