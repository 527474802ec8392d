"""A throwaway PostgreSQL server for the tests and the benchmarks (`--postgres`): Debian's
postgresql binaries, a cluster made by initdb in a temporary folder, listening on 127.0.0.1 only (and a Unix socket in that
folder), trust authentication, stopped and deleted afterwards. As root, the server runs as
the `postgres` user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "crawler"


def _binaries() -> Path:
    found = shutil.which("pg_ctl")
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    for path in candidates + ([found] if found else []):
        if Path(path).with_name("initdb").exists():
            return Path(path).parent
    raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql "
                       "(.ci/run does)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def postgres_server(durable: bool = False):
    """Yields a `postgresql://` URL of a fresh database on a server of its own (`durable`:
    with fsync, as a real server; the tests' runs without)."""
    binaries = _binaries()
    folder = Path(tempfile.mkdtemp(prefix="mldht-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run([*run_as, str(binaries / "initdb"), "-D", str(data), "-U", USER,
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True, env=env,
                   cwd=folder, timeout=120)
    options = f"-k {folder} -p {port} -c listen_addresses=127.0.0.1" + \
        ("" if durable else " -c fsync=off")
    subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                    str(folder / "log"), "-w", "-t", "60", "start"], check=True,
                   capture_output=True, env=env, cwd=folder, timeout=90)
    try:
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "-w", "-t", "60", "stop"], capture_output=True, env=env, cwd=folder,
                       timeout=90)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(url: str, name: str) -> str:
    """A new empty database on the server of `url`; returns its URL."""
    import asyncio

    import asyncpg

    async def create() -> None:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
    # In a thread of its own: the caller may be inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result(timeout=30)
    return url.rsplit("/", 1)[0] + "/" + name
