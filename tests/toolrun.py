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
