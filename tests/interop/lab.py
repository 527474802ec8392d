"""An isolated network lab for interop scenarios: a private network namespace in which real
DHT implementations and mldht nodes run side by side.

A scenario script calls `enter_namespace()` first. Outside a namespace it re-executes itself
under `unshare -n` (as root) or `unshare -rn` (as a user, with a user namespace), so that the
only interface is a private loopback. Inside, `lo` is brought up and the whole benchmark range
198.18.0.0/15 is routed as local, so every node can have its own address (libtorrent keeps one
routing entry per IP and in practice one per /24; Transmission drops 127/8 as martian) and no
packet can leave the machine whatever a reference implementation tries to contact.

`Lab` starts and tracks the processes of a scenario (each logged to its own file) and can
record every UDP datagram on the loopback with tcpdump.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LAB_ENV = "MLDHT_LAB_NETNS"
LAB_NETWORK = "198.18.0.0/15"
REPO = Path(__file__).resolve().parents[2]


def lab_ip(index: int) -> str:
    """The lab address of host `index` (1-based): 198.18.index.1, one /24 per host."""
    if not 1 <= index <= 500:
        raise ValueError(f"lab host index out of range: {index}")
    second, third = divmod(index, 250)
    return f"198.{18 + second}.{third}.1"


def in_lab_namespace() -> bool:
    return os.environ.get(LAB_ENV) == "1"


def unshare_command() -> list[str]:
    """The command prefix that runs a program in a fresh, empty network namespace."""
    if shutil.which("unshare") is None:
        raise RuntimeError("unshare (util-linux) is needed to run interop scenarios")
    return ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]


def enter_namespace() -> None:
    """Make sure this process runs inside a private network namespace set up as the lab.

    Re-executes the current program under unshare when needed (never returns in that case).
    Refuses to go on if any interface other than loopback is visible, so that nothing a
    scenario starts can reach another host.
    """
    if not in_lab_namespace():
        env = dict(os.environ, **{LAB_ENV: "1"})
        argv = [*unshare_command(), sys.executable, *sys.argv]
        os.execvpe(argv[0], argv, env)
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        raise RuntimeError(f"not an isolated namespace: interfaces {interfaces}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    routes = subprocess.run(["ip", "route", "show", "table", "local"], check=True,
                            capture_output=True, text=True).stdout
    if LAB_NETWORK not in routes:
        subprocess.run(["ip", "route", "add", "local", LAB_NETWORK, "dev", "lo"], check=True)


_STARTED = time.monotonic()


def progress(message: str) -> None:
    """A timestamped line on stderr: where a scenario is, for whoever reads its output."""
    print(f"[{time.monotonic() - _STARTED:7.2f}] {message}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    """In the child before exec: be killed when the scenario process dies, however it dies,
    so that no reference implementation outlives its lab."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_udp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


def free_tcp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


class Lab:
    """The processes and files of one scenario run. Use as an async context manager."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        self._capture: subprocess.Popen | None = None
        self.capture_stats: dict = {}

    async def __aenter__(self) -> "Lab":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def path(self, name: str) -> Path:
        return self.workdir / name

    def spawn(self, name: str, argv: list[str], *, stdin=None, stdout=None,
              cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
        """Start a process, its output logged to `<name>.log` unless `stdout` is given."""
        if name in self.processes:
            raise ValueError(f"process name already used: {name}")
        log = open(self.path(f"{name}.log"), "wb")
        process = subprocess.Popen(argv, stdin=stdin, stdout=stdout or log,
                                   stderr=log, cwd=cwd, env=env, start_new_session=True,
                                   preexec_fn=_die_with_parent)
        log.close()
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.path(f"{name}.log")
        return path.read_text(errors="replace") if path.exists() else ""

    async def stop(self, name: str, timeout: float = 10.0,
                   sig: int = signal.SIGTERM) -> int | None:
        """Stop one process (by its PID) gracefully, then kill it after `timeout` seconds."""
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(sig)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        return process.returncode

    def start_capture(self, path: Path, bpf: str = "udp") -> None:
        """Record every datagram on the lab loopback to a pcap file (tcpdump, unbuffered).

        A 64 KiB snapshot covers any datagram on loopback; the 16 MiB kernel buffer is there
        so that a tcpdump starved of CPU on a loaded machine still loses nothing
        (`capture_stats` counts what the kernel dropped, after `stop_capture`)."""
        if shutil.which("tcpdump") is None:
            raise RuntimeError("tcpdump is needed to capture packets")
        self._capture = self.spawn("tcpdump", [
            "tcpdump", "-i", "lo", "-U", "-n", "-s", "65535", "-B", "16384", "-Z", "root",
            "-w", str(path), bpf])
        deadline = time.monotonic() + 30
        while "listening on" not in self.log("tcpdump"):
            if self._capture.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump did not start: {self.log('tcpdump')[-500:]}")
            time.sleep(0.05)

    async def stop_capture(self) -> None:
        """Stop tcpdump and read its counters into `capture_stats`."""
        if self._capture is not None:
            # libpcap (TPACKET_V3) hands datagrams to tcpdump in blocks retired after up to a
            # second, and a block not yet retired is lost at SIGINT: a 0.2 s wait lost the last
            # 2 of 10 datagrams sent 0.3 s apart (and a Transmission run its final announces).
            # --immediate-mode has no such delay, but kept only 128 of 3,000 datagrams sent
            # while tcpdump was stopped for 3 s; without it, this buffer kept all 3,000.
            await asyncio.sleep(1.2)
            exit_code = await self.stop("tcpdump", sig=signal.SIGINT)
            self._capture = None
            self.capture_stats = {"exit": exit_code}
            for count, what in re.findall(r"^(\d+) packets? (captured|received by filter|"
                                          r"dropped by kernel)", self.log("tcpdump"), re.M):
                self.capture_stats[what.replace(" ", "_")] = int(count)

    async def close(self) -> None:
        await self.stop_capture()
        await asyncio.gather(*(self.stop(name) for name in list(self.processes)))


def run_scenario_main(scenarios: dict, argv: list[str] | None = None) -> None:
    """Command-line entry of a scenario script: `script NAME [--workdir DIR] [--capture DIR]`.

    Runs the named coroutine function `scenarios[NAME](lab, capture_dir)` inside the lab
    namespace and prints its report (a JSON object) as the last line of standard output.
    """
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(scenarios))
    parser.add_argument("--workdir", help="where logs and state go (default: a temporary dir)")
    parser.add_argument("--capture", help="directory to write pcap captures to")
    args = parser.parse_args(argv)
    enter_namespace()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"mldht-lab-{args.scenario}-"))

    async def main() -> dict:
        async with Lab(workdir) as lab:
            capture = Path(args.capture).resolve() if args.capture else None
            return await scenarios[args.scenario](lab, capture)

    started = time.monotonic()
    report = asyncio.run(main())
    report.setdefault("scenario", args.scenario)
    report["wall_seconds"] = round(time.monotonic() - started, 2)
    report["workdir"] = str(workdir)
    if args.capture:  # kept beside the pcap, for reading a failed run afterwards
        Path(args.capture).mkdir(parents=True, exist_ok=True)
        (Path(args.capture) / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    print(json.dumps(report, sort_keys=True), flush=True)


def run_scenario(script: str, scenario: str, capture: Path | None = None) -> subprocess.Popen:
    """Start a scenario script in its own namespace (for tests): returns the process; read its
    report with `scenario_report`."""
    argv = [sys.executable, str(Path(__file__).with_name(script)), scenario]
    if capture is not None:
        argv += ["--capture", str(capture)]
    env = {key: value for key, value in os.environ.items() if key != LAB_ENV}
    env.pop("PYTHONPATH", None)  # the pytest network guard must not load in the lab
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=REPO, text=True)


def checked(outcome: dict) -> dict:
    """The report of `LabRuns.outcome`; fails the calling test when the scenario failed."""
    import pytest

    if "failure" in outcome:
        pytest.fail(outcome["failure"], pytrace=False)
    return outcome


def scenario_report(process: subprocess.Popen, timeout: float) -> dict:
    """Wait for a scenario process and return its JSON report (raise with its output if none)."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"scenario timed out after {timeout} s\n{stdout}\n{stderr[-4000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise AssertionError(f"scenario failed (exit {process.returncode})\n"
                             f"{stdout[-4000:]}\n{stderr[-6000:]}")
    return json.loads(lines[-1])


# --- mldht and BitTorrent helpers used by every scenario ------------------------------------


def krpc_traffic(path: Path, ips: set[str]) -> dict:
    """What the nodes at `ips` sent and received in a capture, counted by KRPC kind:
    `q:<method>` (`q:malformed` for a query mldht cannot decode), `r` (every reply) and
    `r:<method>` (replies by the method they answer), `e:<code>`, `undecodable`."""
    from mldht.capture import read_datagrams
    from mldht.krpc import Error, Response
    from mldht.replay import analyze

    analysis = analyze(read_datagrams(path))
    answered = {e.reply.index: e.query.method for e in analysis.exchanges if e.reply}
    sent: dict[str, int] = {}
    received: dict[str, int] = {}
    for captured in analysis.messages:
        message = captured.message
        if captured.declared_query:
            kinds = [f"q:{captured.method}"]
        elif isinstance(message, Response):
            kinds = ["r", f"r:{answered.get(captured.index, '?')}"]
        elif isinstance(message, Error):
            kinds = [f"e:{message.code}"]
        else:
            kinds = ["undecodable"]
        for kind in kinds:
            if captured.datagram.source[0] in ips:
                sent[kind] = sent.get(kind, 0) + 1
            if captured.datagram.destination[0] in ips:
                received[kind] = received.get(kind, 0) + 1
    times = [captured.datagram.time for captured in analysis.messages]
    return {"path": str(path), "bytes": Path(path).stat().st_size,
            "datagrams": len(analysis.messages), "sent": sent, "received": received,
            "first_time": min(times, default=None), "last_time": max(times, default=None),
            "reply_problems": [problem for _, problem in analysis.reply_problems]}


def settled_id(ip: str):
    """A BEP 42 id for a lab address, as a node that ran before keeps in its state file.

    Lab addresses are not exempt local ranges: a node with a random id would move to a secure
    one within its first seconds (scenario_bep42.py tests exactly that), and reference
    clients that met it before would hold a stale id. Scenarios start settled instead."""
    import random

    from mldht.bep42 import secure_node_id

    return secure_node_id(ip, random.SystemRandom())


async def close_all(*closables) -> None:
    """Close, in order, everything a scenario started that has an async `close()`: mldht
    nodes, reference clients, listeners."""
    for closable in closables:
        await closable.close()


async def start_mldht(ip: str, port: int = 0, bootstrap: list[str] | None = None,
                      query_timeout: float = 2.0):
    """A started mldht node on `ip` with a settled BEP 42 id (no default routers: only
    `bootstrap`, if given)."""
    from mldht import DHTNode, NodeConfig

    node = DHTNode((ip, port), bootstrap=list(bootstrap or []), node_id=settled_id(ip),
                   config=NodeConfig(query_timeout=query_timeout))
    await node.start()
    return node


async def wait_until(predicate, timeout: float, step: float = 0.1) -> float | None:
    """Seconds until `predicate()` held (polled every `step`), or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return round(time.monotonic() - started, 3)
        await asyncio.sleep(step)
    return None


def address_spec(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


async def run_mldht_cli(*args: str, timeout: float = 60.0) -> tuple[int | None, str, str]:
    """Run the `mldht` command line (the installed entry point's module) in the lab."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mldht", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        stdout, stderr = await process.communicate()
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


class HandshakeListener:
    """A TCP listener standing in for a BitTorrent peer: it records who connects and the info
    hash of their handshake (BEP 3: 19 'BitTorrent protocol' + 8 reserved + 20 info hash +
    20 peer id), then closes the connection."""

    def __init__(self) -> None:
        self.handshakes: list[tuple[tuple[str, int], bytes]] = []
        self.connected = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self, ip: str, port: int = 0) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._on_connection, ip, port)
        return self._server.sockets[0].getsockname()[:2]

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[:2]
        try:
            async with asyncio.timeout(10):
                header = await reader.readexactly(68)
            if header[:20] == b"\x13BitTorrent protocol":
                self.handshakes.append((peer, header[28:48]))
                self.connected.set()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def info_hashes(self) -> set[bytes]:
        return {info_hash for _, info_hash in self.handshakes}

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
