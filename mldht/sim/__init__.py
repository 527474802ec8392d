"""A deterministic simulator: thousands of real `DHTNode`s on a virtual network and clock.

The nodes run their unchanged code (lookups, routing table, verification pings, timeouts)
on a `VirtualTimeLoop`, exchanging datagrams through a `VirtualNetwork` that adds latency,
loss, NAT and silence; no socket is ever opened and no real time is waited for.

    from mldht.sim import Scenario, format_report, run_scenario
    result = run_scenario(Scenario(nodes=500, lookups=100, loss=0.05, seed=3))
    print(format_report(result.report, result.resources))

The command line is `tools/simulate.py`.
"""

from .loop import VirtualTimeLoop
from .network import AddressPool, LatencyModel, NetworkStats, VirtualNetwork, VirtualTransport
from .report import LookupRecord, format_report
from .scenario import Scenario, Simulation, SimulationResult, run_scenario
from .sybil import SybilSwarm

__all__ = [
    "AddressPool", "LatencyModel", "LookupRecord", "NetworkStats", "Scenario", "Simulation",
    "SimulationResult", "SybilSwarm", "VirtualNetwork", "VirtualTimeLoop", "VirtualTransport",
    "format_report", "run_scenario",
]
