"""tools/peer_finder.py: its input forms, output shapes, resuming, Ctrl-C, the per-destination
cap seen by the nodes it queries, and whole runs against a local network on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import io
import json
import signal
import sys
from pathlib import Path

import bencodepy
import pytest

from mldht import Node
from mldht.engine import LookupSummary, PeerLookupResult
from mldht.ids import InfoHash
from netguard import guarded_env
from toolrun import LoopbackNetwork, run_tool

TOOL = Path(__file__).resolve().parents[1] / "tools" / "peer_finder.py"
spec = importlib.util.spec_from_file_location("peer_finder", TOOL)
finder = importlib.util.module_from_spec(spec)
sys.modules["peer_finder"] = finder  # dataclasses look their module up
spec.loader.exec_module(finder)

HASHES = [hashlib.sha1(f"swarm {i}".encode()).digest() for i in range(200)]


# --- input ------------------------------------------------------------------------------------

def make_torrent(folder: Path, name: str) -> tuple[Path, bytes]:
    info = {b"name": name.encode(), b"length": 3, b"piece length": 16384,
            b"pieces": hashlib.sha1(b"abc").digest()}
    encode = bencodepy.Bencode(encoding=None).encode
    path = folder / f"{name}.torrent"
    path.write_bytes(encode({b"announce": b"udp://tracker.invalid:80", b"info": info}))
    return path, hashlib.sha1(encode(info)).digest()


def test_every_input_form(tmp_path):
    torrent, torrent_hash = make_torrent(tmp_path, "debian")
    v2 = hashlib.sha256(b"v2 swarm").digest()
    items = [
        HASHES[0].hex(),
        base64.b32encode(HASHES[1]).decode(),
        f"magnet:?xt=urn:btih:{HASHES[2].hex()}&dn=Some+Name",
        f"magnet:?xt=urn:btmh:1220{v2.hex()}&dn=v2",
        str(torrent),
    ]
    warnings = []
    targets = finder.read_targets(items, [], io.StringIO(), warnings.append)
    assert warnings == []
    assert [t.info_hash for t in targets] == [HASHES[0], HASHES[1], HASHES[2], v2[:20],
                                              torrent_hash]
    assert [t.name for t in targets] == [None, None, "Some Name", "v2", "debian"]


def test_list_files_skip_comments_report_bad_lines_and_drop_duplicates(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# my swarms\n"
                       f"{HASHES[0].hex()}\n"
                       "\n"
                       "not-a-hash\n"
                       f"magnet:?xt=urn:btih:{HASHES[0].hex()}&dn=named+later\n"
                       f"{HASHES[1].hex().upper()}\n"
                       "magnet:?xt=urn:btih:abc\n"
                       f"{tmp_path / 'missing.torrent'}\n")
    warnings = []
    stdin = io.StringIO(f"{HASHES[2].hex()}\n{HASHES[1].hex()}\n")
    targets = finder.read_targets([], [str(listing), "-"], stdin, warnings.append)
    assert [t.info_hash for t in targets] == [HASHES[0], HASHES[1], HASHES[2]]
    assert targets[0].name == "named later"  # a duplicate's name fills a missing one
    assert len(warnings) == 3
    assert warnings[0].startswith(f"{listing} line 4: ") and "(skipped)" in warnings[0]
    assert warnings[1].startswith(f"{listing} line 7: ") and "40 hex digits" in warnings[1]
    assert warnings[2].startswith(f"{listing} line 8: ") and "cannot read" in warnings[2]


def test_nothing_valid_exits_2(capsys, tmp_path):
    listing = tmp_path / "bad.txt"
    listing.write_text("nope\n# only a comment\n")
    assert finder.main(["-i", str(listing), "--bootstrap", "127.0.0.1:1"]) == 2
    error = capsys.readouterr().err
    assert "bad.txt line 1:" in error
    assert error.strip().endswith("peer_finder: error: nothing valid to look up")


@pytest.mark.parametrize("argv, message", [
    (["--concurrency", "0"], "--concurrency"),
    (["--rate", "0"], "--rate"),
    (["--per-ip-rate", "6"], "below 5"),
    (["--timeout", "-1"], "--timeout"),
    (["--resume"], "needs -o"),
])
def test_bad_options_exit_2(capsys, argv, message):
    assert finder.main([HASHES[0].hex(), "--bootstrap", "127.0.0.1:1", *argv]) == 2
    assert message in capsys.readouterr().err


# --- output -----------------------------------------------------------------------------------

def a_result(peers, error=None) -> PeerLookupResult:
    summary = None if error else LookupSummary(
        target=InfoHash(HASHES[0]), elapsed=1.23456, time_to_first_peer=0.4567, queried=12,
        answered=9, timed_out=3, peers=len(peers), closest=[])
    return PeerLookupResult(InfoHash(HASHES[0]), peers, summary, error)


def test_jsonl_record_shape():
    target = finder.Target(HASHES[0], "name", "argument 1")
    record = finder.record_of(target, a_result([("10.0.0.1", 6881), ("2001:db8::1", 51413)]))
    assert record == {
        "infohash": HASHES[0].hex(), "name": "name",
        "peers": ["10.0.0.1:6881", "[2001:db8::1]:51413"], "peer_count": 2, "ipv4_peers": 1,
        "ipv6_peers": 1, "seeds": None, "leechers": None, "time_to_first_peer": 0.457,
        "elapsed": 1.235, "queried": 12, "answered": 9, "unanswered": 3, "error": None}
    out = io.StringIO()
    finder.RecordWriter(out, "jsonl", header=True).write(record)
    assert json.loads(out.getvalue()) == record and out.getvalue().count("\n") == 1
    failed = finder.record_of(target, a_result([], error="the node closed"))
    assert failed["error"] == "the node closed" and failed["elapsed"] is None


def test_csv_shape():
    target = finder.Target(HASHES[0], "a, name", "argument 1")
    out = io.StringIO()
    writer = finder.RecordWriter(out, "csv", header=True)
    writer.write(finder.record_of(target, a_result([("10.0.0.1", 6881), ("10.0.0.2", 1)])))
    import csv
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == finder.CSV_FIELDS
    assert rows[0]["infohash"] == HASHES[0].hex() and rows[0]["name"] == "a, name"
    assert rows[0]["peers"] == "10.0.0.1:6881 10.0.0.2:1" and rows[0]["peer_count"] == "2"
    assert rows[0]["seeds"] == ""


def test_resume_reads_done_infohashes_and_cuts_a_half_line(tmp_path):
    out = tmp_path / "out.jsonl"
    lines = [json.dumps({"infohash": h.hex(), "peers": []}) for h in HASHES[:3]]
    out.write_text("\n".join(lines) + "\n" + '{"infohash": "' + HASHES[3].hex()[:10])
    assert finder.done_infohashes(out, "jsonl") == set(HASHES[:3])
    assert out.read_text() == "\n".join(lines) + "\n"  # the half line is gone
    csv_out = tmp_path / "out.csv"
    csv_out.write_text(",".join(finder.CSV_FIELDS) + "\n" + HASHES[5].hex() + ",x\n")
    assert finder.done_infohashes(csv_out, "csv") == {HASHES[5]}


# --- runs against a local network -------------------------------------------------------------

class LocalNetwork(LoopbackNetwork):
    """Records when each node was queried from which IP."""

    def __init__(self, count: int, base: int) -> None:
        super().__init__(count, base)
        self.queries: dict[int, list[tuple[float, str]]] = {i: [] for i in range(count)}

    def observe(self, index: int, event) -> None:
        if event.kind == "query_received":
            self.queries[index].append((event.at, event.source[0]))


@pytest.fixture
async def network():
    net = LocalNetwork(8, 6)
    await net.start()
    try:
        yield net
    finally:
        await net.close()


async def run_finder(*argv: str, timeout: float = 120) -> tuple[int, str, str]:
    return await run_tool("peer_finder.py", *argv, timeout=timeout)


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.network
async def test_a_batch_finds_every_announced_swarm_politely(network, tmp_path):
    announced = HASHES[:40]
    for index, info_hash in enumerate(announced):
        await network.nodes[index % len(network.nodes)].announce(info_hash, 7000 + index)
    listing = tmp_path / "hashes.txt"
    listing.write_text("\n".join(h.hex() for h in HASHES[:60]) + "\n")
    out = tmp_path / "out.jsonl"
    code, stdout, stderr = await run_finder(
        "-i", str(listing), "-o", str(out), "--bootstrap", network.bootstrap,
        "--bind", "127.0.6.99:0", "--timeout", "10", "--concurrency", "8")
    assert code == 0, stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 60 and stdout == ""
    by_hash = {record["infohash"]: record for record in records}
    for index, info_hash in enumerate(announced):
        record = by_hash[info_hash.hex()]
        owner = network.nodes[index % len(network.nodes)].address[0]
        assert record["peers"] == [f"{owner}:{7000 + index}"], record
        assert record["time_to_first_peer"] is not None and record["error"] is None
    for info_hash in HASHES[40:60]:
        assert by_hash[info_hash.hex()]["peers"] == []
    assert "with peers" in stderr and "estimated DHT size" in stderr
    # Polite: no node limited us, and no node saw more than the cap (a burst of 10, then
    # 3 a second: 40) in any 10 s window from the finder's IP; the cap was reached.
    assert [node.stats.rate_limited for node in network.nodes] == [0] * len(network.nodes)
    windows = [max_in_window([at for at, ip in queries if ip == "127.0.6.99"], 10.0)
               for queries in network.queries.values()]
    assert max(windows) <= 40, windows
    assert max(windows) >= 25, windows  # the batch was long enough to meet the cap


@pytest.mark.network
async def test_csv_output_and_resume(network, tmp_path):
    for index, info_hash in enumerate(HASHES[:6]):
        await network.nodes[index].announce(info_hash, 7100 + index)
    out = tmp_path / "out.csv"
    first = [h.hex() for h in HASHES[:3]]
    code, _, stderr = await run_finder(*first, "-o", str(out), "--format", "csv",
                                       "--bootstrap", network.bootstrap,
                                       "--bind", "127.0.6.98:0", "--timeout", "5")
    assert code == 0, stderr
    with open(out, "a") as handle:
        handle.write(HASHES[3].hex() + ",half a li")  # a crash mid-line
    code, _, stderr = await run_finder(*[h.hex() for h in HASHES[:8]], "-o", str(out),
                                       "--format", "csv", "--resume", "--bootstrap",
                                       network.bootstrap, "--bind", "127.0.6.97:0",
                                       "--timeout", "5")
    assert code == 0, stderr
    assert "--resume: 3 already in" in stderr
    import csv
    rows = list(csv.DictReader(out.open()))
    assert [row["infohash"] for row in rows] == first + [h.hex() for h in HASHES[3:8]] or \
        sorted(row["infohash"] for row in rows) == sorted(h.hex() for h in HASHES[:8])
    assert len(rows) == 8  # each once, the half line gone, one header
    assert all(int(row["peer_count"]) == 1 for row in rows[:6] if row["infohash"] in
               {h.hex() for h in HASHES[:6]})


@pytest.mark.network
async def test_ctrl_c_keeps_complete_lines_prints_the_summary_and_exits_130(network, tmp_path):
    out = tmp_path / "out.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(TOOL), *[h.hex() for h in HASHES], "-o", str(out),
        "--bootstrap", network.bootstrap, "--bind", "127.0.6.96:0", "--rate", "20",
        "--concurrency", "2", "--timeout", "5", env=guarded_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(300):  # until a few lines are out (at most 30 s)
            await asyncio.sleep(0.1)
            if out.exists() and out.read_text().count("\n") >= 3:
                break
        process.send_signal(signal.SIGINT)  # our own child
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130, err.decode()
    text = out.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert 3 <= len(records) < len(HASHES)
    assert "(interrupted)" in err.decode()


@pytest.mark.network
async def test_state_lets_the_next_run_start_without_the_routers(tmp_path):
    net = LocalNetwork(6, 5)
    await net.start()
    router = Node(("127.0.5.200", 0), bootstrap=[])
    await router.start()
    for node in net.nodes:
        await router.ping(node.address)
    router_address = f"127.0.5.200:{router.address[1]}"
    state = tmp_path / "state.json"
    try:
        await net.nodes[1].announce(HASHES[0], 7300)
        code, _, err = await run_finder(HASHES[0].hex(), "--bootstrap", router_address,
                                        "--bind", "127.0.5.99:0", "--state", str(state),
                                        "--timeout", "5")
        assert code == 0, err
        assert state.exists()
        await router.close()  # the router is gone
        code, out, err = await run_finder(HASHES[0].hex(), "--bootstrap", router_address,
                                          "--bind", "127.0.5.99:0", "--state", str(state),
                                          "--timeout", "5")
        assert code == 0, err
        assert json.loads(out)["peers"] == [f"{net.nodes[1].address[0]}:7300"]
        # Without the state, the same run cannot join: exit 3 with one line.
        code, _, err = await run_finder(HASHES[0].hex(), "--bootstrap", router_address,
                                        "--bind", "127.0.5.98:0", "--timeout", "5")
        assert code == 3
        assert "could not join the DHT" in err and err.count("\n") == 1
    finally:
        await router.close()
        await net.close()
