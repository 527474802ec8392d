"""A deterministic simulator: thousands of real DHT engines on a virtual network and clock.

Every node is an `mldht.engine.Engine`, the sans-I/O core a real `Node` runs (lookups,
routing table, verification pings, timeouts), driven from one timer heap (`Scheduler`) and
exchanging datagrams through a `VirtualNetwork` that adds latency, loss, NAT and silence;
no event loop runs, no socket is ever opened and no real time is waited for.

    from mldht.sim import Scenario, format_report, run_scenario
    result = run_scenario(Scenario(nodes=500, lookups=100, loss=0.05, seed=3))
    print(format_report(result.report, result.resources))

The command line is `tools/simulate.py`.
"""

from .clock import Scheduler
from .network import AddressPool, LatencyModel, NetworkStats, VirtualNetwork, VirtualTransport
from .node import SimNode
from .report import LookupRecord, format_report
from .scenario import Scenario, Simulation, SimulationResult, run_scenario
from .sybil import SybilSwarm

__all__ = [
    "AddressPool", "LatencyModel", "LookupRecord", "NetworkStats", "Scenario", "Scheduler",
    "SimNode", "Simulation", "SimulationResult", "SybilSwarm", "VirtualNetwork",
    "VirtualTransport", "format_report", "run_scenario",
]
