"""What the benchmarks that run child processes share: their environment, which core each
runs on, the CPU time and peak memory they used, and a network namespace of their own."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def child_env() -> dict[str, str]:
    """This environment, with the repository first on PYTHONPATH (anything already there,
    such as a test's network guard, kept)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def cores() -> tuple[set[int] | None, int | None]:
    """(the other cores, the last core allowed); (None, None) when there is one core (or
    no taskset): nothing pinned."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(allowed) < 2 or not shutil.which("taskset"):
        return None, None
    return set(allowed[:-1]), allowed[-1]


def pinned(command: list[str], cpus) -> list[str]:
    if cpus is None:
        return command
    listing = ",".join(str(cpu) for cpu in sorted(cpus)) if isinstance(cpus, set) else str(cpus)
    return ["taskset", "-c", listing, *command]


def cpu_seconds(pid: int) -> float | None:
    """CPU time `pid` has used so far, in seconds (None once it is gone): the sum of its
    threads' run time in /proc/<pid>/task/*/schedstat (nanoseconds), else utime + stime
    from /proc/<pid>/stat (clock ticks, 10 ms)."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as handle:
                total += int(handle.read().split()[0])
        return total / 1e9
    except (OSError, IndexError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss(pid: int) -> int | None:
    """The highest resident set of a live process so far, in bytes (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


NAMESPACE_FLAG = "--in-namespace"


def in_own_namespace(argv: list[str]) -> list[str]:
    """Run this script again inside a network namespace of its own (`unshare -n`, loopback
    up), so that nothing it or its children send can leave the machine, whatever address
    they use; returns the arguments to go on with. Where namespaces cannot be made (no
    privilege), goes on where it is (everything still goes to 127.0.0.0/8) and says so."""
    if NAMESPACE_FLAG in argv:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return [arg for arg in argv if arg != NAMESPACE_FLAG]
    if shutil.which("unshare") and shutil.which("ip"):
        probe = subprocess.run(["unshare", "-n", "true"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        if probe.returncode == 0:
            command = ["unshare", "-n", "--", sys.executable, sys.argv[0], *argv,
                       NAMESPACE_FLAG]
            sys.stdout.flush()
            sys.stderr.flush()
            os.execvp("unshare", command)
    print(f"{Path(sys.argv[0]).name}: no network namespace (unshare -n refused): "
          "running on this host's loopback", file=sys.stderr)
    return argv


def die_with_parent() -> None:
    """For `preexec_fn`: the child gets SIGTERM when this process dies (Linux's
    PR_SET_PDEATHSIG), so that a benchmark killed midway leaves nothing running."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class DutyCycle(threading.Thread):
    """Lets processes run `share` of every `period` seconds (SIGSTOP / SIGCONT)."""

    def __init__(self, pids: list[int], share: float, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pids, self.share, self.period = pids, share, period
        self.done = threading.Event()

    def _signal(self, signum) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def run(self) -> None:
        try:
            while not self.done.is_set():
                time.sleep(self.period * self.share)
                self._signal(signal.SIGSTOP)
                time.sleep(self.period * (1 - self.share))
                self._signal(signal.SIGCONT)
        finally:
            self._signal(signal.SIGCONT)
