"""Send a bounded flood of KRPC pings from one address (a load generator for tests/benchmarks).

    python tools/flood.py --source 127.0.0.151 --target 127.0.0.150:6881 --rate 10000 --seconds 2

Refuses any target outside loopback. Prints how many datagrams it sent and how many answers
came back, as JSON.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import time

import bencodepy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True, metavar="IP:PORT")
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    ip, port = args.target.rsplit(":", 1)
    if not ipaddress.ip_address(ip).is_loopback:
        parser.error("the flood target must be a loopback address")
    target = (ip, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.source, 0))
    sock.setblocking(False)
    codec = bencodepy.Bencode(encoding=None)
    sent = answers = 0
    started = time.monotonic()
    end = started + min(args.seconds, 60.0)  # bounded whatever is asked
    limit = int(args.rate * min(args.seconds, 60.0))
    while time.monotonic() < end and sent < limit:
        due = int((time.monotonic() - started) * args.rate)
        while sent < min(due, limit):
            message = {b"t": sent.to_bytes(4, "big"), b"y": b"q", b"q": b"ping",
                       b"a": {b"id": b"F" * 20}}
            try:
                sock.sendto(codec.encode(message), target)
            except BlockingIOError:
                break
            sent += 1
        try:
            while True:
                sock.recv(65535)
                answers += 1
        except BlockingIOError:
            pass
        time.sleep(0.001)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            sock.recv(65535)
            answers += 1
        except BlockingIOError:
            time.sleep(0.01)
    print(json.dumps({"sent": sent, "answers": answers,
                      "seconds": round(time.monotonic() - started, 2)}))


if __name__ == "__main__":
    main()
