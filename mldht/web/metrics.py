"""Prometheus metrics of a node, through prometheus_client (the reference client library:
the text format, escaping and histogram maths are its job, not ours).

Counters and gauges are read from `node.status()` when Prometheus scrapes (a custom
collector: nothing is counted twice); the lookup-duration histogram is fed by the node's
`lookup_finished` events.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LOOKUP_BUCKETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
_BY_LABEL = {
    "queries_received": ("mldht_queries_received", "Queries received, by method", "method"),
    "queries_sent_by_method": ("mldht_queries_sent", "Queries sent, by method", "method"),
    "errors_received_by_code": ("mldht_errors_received", "KRPC errors received, by code", "code"),
    "errors_sent_by_code": ("mldht_errors_sent", "KRPC errors sent, by code", "code"),
}
_SKIPPED = {"queries_sent", "errors_received", "errors_sent"}  # the sums of labelled ones


class NodeCollector(Collector):
    """Counters and gauges from a status snapshot (`snapshot()` returns `node.status()`)."""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self.snapshot = snapshot

    def describe(self) -> list:
        return []  # not known before the first snapshot: registering must not build one

    def collect(self) -> Iterator[Metric]:
        status = self.snapshot()
        for name, value in status["counters"].items():
            if name in _BY_LABEL:
                metric_name, documentation, label = _BY_LABEL[name]
                family = CounterMetricFamily(metric_name, documentation, labels=[label])
                for key, count in sorted(value.items(), key=lambda item: str(item[0])):
                    family.add_metric([str(key)], count)
                yield family
            elif name not in _SKIPPED and isinstance(value, int):
                yield CounterMetricFamily(f"mldht_{name}", name.replace("_", " ").capitalize(),
                                          value=value)
        nodes = GaugeMetricFamily("mldht_table_nodes", "Routing table entries by state "
                                  "(replacement: waiting in a bucket's cache)",
                                  labels=["family", "state"])
        buckets = GaugeMetricFamily("mldht_table_buckets", "Routing table buckets",
                                    labels=["family"])
        for family_name, family in status["families"].items():
            table = family["table"]
            for state in ("good", "questionable", "bad", "replacements"):
                nodes.add_metric([family_name, state.rstrip("s")], table[state])
            buckets.add_metric([family_name], len(table["buckets"]))
        yield nodes
        yield buckets
        stores = status["stores"]
        yield GaugeMetricFamily("mldht_stored_infohashes", "Infohashes with peers stored",
                                value=stores["infohashes"])
        yield GaugeMetricFamily("mldht_stored_peers", "Peers stored", value=stores["peers"])
        yield GaugeMetricFamily("mldht_stored_items", "BEP 44 items stored", value=stores["items"])
        yield GaugeMetricFamily("mldht_lookups_in_flight", "Lookups running",
                                value=len(status["lookups"]))
        in_flight = GaugeMetricFamily("mldht_queries_in_flight", "Queries awaiting an answer",
                                      labels=["method"])
        for method, count in sorted(status["queries"]["in_flight"].items()):
            in_flight.add_metric([method], count)
        yield in_flight
        yield GaugeMetricFamily("mldht_queries_queued", "Queries waiting for the outbound budget",
                                value=status["queries"]["queued"])
        yield GaugeMetricFamily("mldht_uptime_seconds", "Seconds since the node started",
                                value=status["uptime"])
        estimate = status["size_estimate"]
        if estimate.get("size"):
            yield GaugeMetricFamily("mldht_estimated_dht_size", "DHT size estimated from lookups",
                                    value=estimate["size"])


class NodeMetrics:
    """A registry of its own (not prometheus_client's global one, so that several nodes or
    test apps in one process do not collide) with a node's collector and the histogram."""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(snapshot))
        self.lookup_duration = Histogram(
            "mldht_lookup_duration_seconds", "Duration of finished lookups, by kind",
            labelnames=["kind"], buckets=LOOKUP_BUCKETS, registry=self.registry)

    def observe_lookup(self, kind: str, seconds: float) -> None:
        self.lookup_duration.labels(kind=kind).observe(seconds)

    def exposition(self) -> bytes:
        """The text exposition format (version 0.0.4)."""
        return generate_latest(self.registry)
