"""Run a script of tools/ as a child process under the network guard (tests of the tools)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from netguard import guarded_env

TOOLS = Path(__file__).resolve().parents[1] / "tools"


async def run_tool(script: str, *argv: str, timeout: float = 120) -> tuple[int, str, str]:
    """`python tools/<script> argv...`: its exit status, stdout and stderr. Killed (it is
    our own child) when it outlives `timeout`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(TOOLS / script), *argv, env=guarded_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode, out.decode(), err.decode()


class LoopbackNetwork:
    """`count` mldht nodes on 127.0.<base>.10 and up (one IP each: a routing table keeps
    one node per IP) that know each other; `observe(index, event)` sees every event of
    node `index` (what crossed the wire to it)."""

    def __init__(self, count: int, base: int) -> None:
        from mldht import Node

        self.nodes = [Node((f"127.0.{base}.{10 + i}", 0), bootstrap=[]) for i in range(count)]

    def observe(self, index: int, event) -> None:
        """Override to record what the nodes see."""

    async def start(self) -> None:
        for index, node in enumerate(self.nodes):
            await node.start()
            node.add_observer(lambda event, index=index: self.observe(index, event))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            await node.ping(first.address)
            await first.ping(node.address)
        await asyncio.gather(*(node.find_node(node.node_id, timeout=3) for node in self.nodes))

    @property
    def bootstrap(self) -> str:
        ip, port = self.nodes[0].address
        return f"{ip}:{port}"

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()
