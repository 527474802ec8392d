"""Drive WebTorrent's `bittorrent-dht` (Node.js) from an interop scenario.

`js/wtnode.js` runs any number of bittorrent-dht instances in one Node.js process and
speaks line-delimited JSON on stdin/stdout (one reply line per command, matched by `id`).
`WebTorrentNodes` starts it through `Lab.spawn` (so the lab tracks and stops it by PID) and
exposes each command as a coroutine with a timeout.

The npm dependencies are installed with `npm ci --prefix tests/interop/js`; without them
`WebTorrentNodes.start` raises `WebTorrentMissing` saying so.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().with_name("js")
CONTROL_SCRIPT = JS_DIR / "wtnode.js"
INSTALL_HINT = "npm ci --prefix tests/interop/js"


class WebTorrentMissing(RuntimeError):
    """Node.js or the bittorrent-dht package is not installed."""


class WebTorrentError(RuntimeError):
    """wtnode.js answered a command with an error (or did not answer in time)."""


def check_installed() -> str:
    """The path of the node binary; raise `WebTorrentMissing` with the fix otherwise."""
    node = shutil.which("node")
    if node is None:
        raise WebTorrentMissing("Node.js (`node`) is not on PATH: install Node.js 18 or newer")
    if not (JS_DIR / "node_modules" / "bittorrent-dht" / "package.json").exists():
        raise WebTorrentMissing(f"bittorrent-dht is not installed in {JS_DIR}/node_modules: "
                                f"run `{INSTALL_HINT}` from the repository root")
    return node


def installed_version() -> str | None:
    try:
        package = JS_DIR / "node_modules" / "bittorrent-dht" / "package.json"
        return json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


class WebTorrentNodes:
    """One wtnode.js process holding named bittorrent-dht instances.

        wt = WebTorrentNodes(lab)
        await wt.start()
        info = await wt.start_dht("w1", "198.18.11.1", bootstrap=["198.18.1.1:6881"])
        await wt.announce("w1", info_hash_hex, 6881)
        found = await wt.lookup("w1", info_hash_hex)
        await wt.close()
    """

    def __init__(self, lab, name: str = "webtorrent", debug: bool = False) -> None:
        self.lab = lab
        self.name = name
        self.debug = debug
        self.process: subprocess.Popen | None = None
        self.node_version: str | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._unsolicited: list[dict] = []
        self._reader_task: asyncio.Task | None = None
        self._hello: asyncio.Future | None = None

    async def start(self, timeout: float = 10.0) -> None:
        node = check_installed()
        env = dict(os.environ)
        if self.debug:
            env["DEBUG"] = "bittorrent-dht,k-rpc*"  # bittorrent-dht's debug log, to the log file
        self.process = self.lab.spawn(self.name, [node, str(CONTROL_SCRIPT)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, cwd=JS_DIR, env=env)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     self.process.stdout)
        self._hello = loop.create_future()
        self._reader_task = asyncio.create_task(self._read(reader), name=f"{self.name}-reader")
        try:
            async with asyncio.timeout(timeout):
                hello = await self._hello
        except TimeoutError:
            raise WebTorrentError(f"wtnode.js did not start within {timeout} s:\n"
                                  f"{self.lab.log(self.name)[-2000:]}") from None
        self.node_version = hello.get("node")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    message = json.loads(line)
                except ValueError:
                    self._unsolicited.append({"unparsed": line.decode(errors="replace")})
                    continue
                future = self._waiting.pop(message.get("id"), None) if message.get("id") else None
                if future is not None and not future.done():
                    future.set_result(message)
                elif message.get("event") == "hello" and self._hello and not self._hello.done():
                    self._hello.set_result(message)
                else:
                    self._unsolicited.append(message)
        finally:
            failure = WebTorrentError(f"wtnode.js exited:\n{self.lab.log(self.name)[-2000:]}")
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(failure)
            self._waiting.clear()
            if self._hello is not None and not self._hello.done():
                self._hello.set_exception(failure)

    @property
    def unsolicited(self) -> list[dict]:
        """Lines that answered no command (uncaught exceptions in wtnode.js, mostly)."""
        return list(self._unsolicited)

    async def command(self, cmd: str, timeout: float = 15.0, **fields: Any) -> dict:
        """Send one command and return its reply; raise `WebTorrentError` on error/timeout."""
        if self.process is None or self.process.poll() is not None:
            raise WebTorrentError("wtnode.js is not running")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        line = json.dumps({"id": request_id, "cmd": cmd, **fields}) + "\n"
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(line.encode())
            self.process.stdin.flush()
            async with asyncio.timeout(timeout):
                reply = await future
        except TimeoutError:
            raise WebTorrentError(f"no answer to {cmd} within {timeout} s") from None
        except (BrokenPipeError, OSError) as exc:
            raise WebTorrentError(f"wtnode.js is gone: {exc}") from None
        finally:
            self._waiting.pop(request_id, None)
        if not reply.get("ok"):
            raise WebTorrentError(f"{cmd}: {reply.get('error')}")
        return reply

    # --- the commands -------------------------------------------------------------------

    async def start_dht(self, name: str, address: str, port: int = 0, *, bootstrap: list[str],
                        host: str | None = None, node_id: str | None = None,
                        timeout: float = 10.0) -> dict:
        """Start a DHT bound to address:port joining through `bootstrap` only (never the
        public routers). Returns nodeId, address, port, ready, readyMs and its table."""
        fields: dict[str, Any] = {"name": name, "address": address, "port": port,
                                  "bootstrap": list(bootstrap), "timeoutMs": int(timeout * 1000)}
        if host:
            fields["host"] = host
        if node_id:
            fields["nodeId"] = node_id
        return await self.command("start", timeout=timeout + 5, **fields)

    async def announce(self, name: str, info_hash: str, port: int, timeout: float = 10.0) -> dict:
        """Announce (port 0: implied port). Returns ms and nodes (how many accepted)."""
        return await self.command("announce", timeout=timeout + 5, name=name, infohash=info_hash,
                                  port=port, timeoutMs=int(timeout * 1000))

    async def lookup(self, name: str, info_hash: str, timeout: float = 10.0) -> dict:
        """get_peers lookup. Returns peers [{host, port, firstMs, from: ["local" or
        "ip:port" of each node whose reply held it]}], ms, firstPeerMs, visited."""
        return await self.command("lookup", timeout=timeout + 5, name=name, infohash=info_hash,
                                  timeoutMs=int(timeout * 1000))

    async def table(self, name: str) -> list[dict]:
        """The routing table: [{id (hex), host, port}]."""
        return (await self.command("table", name=name))["nodes"]

    async def add_node(self, name: str, host: str, port: int, node_id: str | None = None,
                       wait: float = 0.0) -> dict:
        """Add a node (without an id bittorrent-dht pings it first); `wait` seconds for it
        to show up in the table. Returns added and ms."""
        fields: dict[str, Any] = {"name": name, "host": host, "port": port,
                                  "waitMs": int(wait * 1000)}
        if node_id:
            fields["nodeId"] = node_id
        return await self.command("addNode", timeout=wait + 5, **fields)

    async def stats(self, name: str) -> dict:
        """Queries received (by method and by source), announces stored, warnings."""
        return await self.command("stats", name=name)

    async def destroy(self, name: str) -> None:
        await self.command("destroy", name=name)

    async def close(self, timeout: float = 5.0) -> None:
        """Quit wtnode.js (destroying every DHT); the lab stops it by PID if it lingers."""
        if self.process is not None and self.process.poll() is None:
            try:
                await self.command("quit", timeout=timeout)
            except WebTorrentError:
                pass
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
            except OSError:
                pass
            await self.lab.stop(self.name, timeout=timeout)
        if self._reader_task is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._reader_task
            except TimeoutError:
                self._reader_task.cancel()
            self._reader_task = None

    async def __aenter__(self) -> "WebTorrentNodes":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
