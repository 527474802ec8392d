"""KRPC codec cost: microseconds per message to decode and encode typical DHT messages.

    python tools/bench/codec.py

For each message (ping, find_node with an 8-node reply, get_peers with a nodes + token reply
and with a 50-value reply, announce_peer, an error) the bytes are those mldht's
`encode_message` produces. Measured: `mldht.krpc.decode_message` (bencode plus validation
into typed objects) and `encode_message`; the bencode alone with mldht's strict bencode.py
decoder (`krpc.decode_bencode`), stock bencode.py decode and encode of the same dictionary,
and `fastbencode` (Rust) when it is installed. Best of `--repeat` timings of `--number`
calls each (auto-sized to about 0.05 s when not given). Prints a table, or JSON with --json.
Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import json
import random
import timeit

import bencodepy

from mldht.compact import NodeInfo
from mldht.ids import InfoHash, NodeId
from mldht.krpc import (
    PROTOCOL_ERROR, AnnouncePeer, Error, FindNode, GetPeers, Ping, Response, decode_bencode,
    decode_message, encode_message,
)

try:
    import fastbencode
except ImportError:  # optional: only compared when installed
    fastbencode = None

STOCK = bencodepy.Bencode(encoding=None, encoding_fallback=None, dict_ordered=False)
VERSION = b"LT\x02\x01"


def messages(rng: random.Random) -> dict[str, object]:
    """The typical messages, as mldht's typed objects."""
    ours, theirs = NodeId(rng.randbytes(20)), NodeId(rng.randbytes(20))
    target = NodeId(rng.randbytes(20))
    info_hash = InfoHash(rng.randbytes(20))
    nodes = [NodeInfo(NodeId(rng.randbytes(20)), f"{rng.randrange(1, 224)}.{rng.randrange(256)}."
                      f"{rng.randrange(256)}.{rng.randrange(1, 255)}", rng.randrange(1024, 65536))
             for _ in range(8)]
    values = [(f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}."
               f"{rng.randrange(1, 255)}", rng.randrange(1024, 65536)) for _ in range(50)]
    requester = ("203.0.113.7", 51413)
    token = rng.randbytes(8)

    def reply(**fields) -> Response:
        return Response(transaction_id=b"aa01", version=VERSION, sender_id=theirs,
                        requester=requester, **fields)

    return {
        "ping query": Ping(transaction_id=b"aa01", version=VERSION, sender_id=ours),
        "ping reply": reply(),
        "find_node query": FindNode(transaction_id=b"aa01", version=VERSION, sender_id=ours,
                                    target=target),
        "find_node reply (8 nodes)": reply(nodes=nodes),
        "get_peers query": GetPeers(transaction_id=b"aa01", version=VERSION, sender_id=ours,
                                    info_hash=info_hash),
        "get_peers reply (nodes+token)": reply(nodes=nodes, token=token),
        "get_peers reply (50 values)": reply(nodes=nodes, token=token, values=values),
        "announce_peer query": AnnouncePeer(transaction_id=b"aa01", version=VERSION,
                                            sender_id=ours, info_hash=info_hash, token=token,
                                            port=6881),
        "error": Error(transaction_id=b"aa01", version=VERSION, code=PROTOCOL_ERROR,
                       message="bad token"),
    }


def per_call_us(function, number: int | None, repeat: int) -> float:
    timer = timeit.Timer(function)
    if number is None:  # about 0.05 s per timing
        number = max(1, int(0.05 / max(timer.timeit(20) / 20, 1e-8)))
    return round(min(timer.repeat(repeat=repeat, number=number)) / number * 1e6, 2)


def measure(number: int | None = None, repeat: int = 5, seed: int = 1) -> list[dict]:
    rows = []
    for name, message in messages(random.Random(seed)).items():
        data = encode_message(message)
        assert encode_message(decode_message(data)) == data  # the bytes round-trip
        plain = STOCK.decode(data)
        row = {
            "message": name, "bytes": len(data),
            "decode_message_us": per_call_us(lambda: decode_message(data), number, repeat),
            "encode_message_us": per_call_us(lambda: encode_message(message), number, repeat),
            "strict_bencode_decode_us": per_call_us(lambda: decode_bencode(data), number, repeat),
            "bencodepy_decode_us": per_call_us(lambda: STOCK.decode(data), number, repeat),
            "bencodepy_encode_us": per_call_us(lambda: STOCK.encode(plain), number, repeat),
        }
        if fastbencode is not None:
            assert fastbencode.bdecode(data) == plain and fastbencode.bencode(plain) == data
            row["fastbencode_decode_us"] = per_call_us(lambda: fastbencode.bdecode(data), number,
                                                       repeat)
            row["fastbencode_encode_us"] = per_call_us(lambda: fastbencode.bencode(plain), number,
                                                       repeat)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=None, help="calls per timing (default: auto)")
    parser.add_argument("--repeat", type=int, default=5, help="timings, the best is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = measure(args.number, args.repeat)
    if args.json:
        print(json.dumps({"rows": rows, "fastbencode": fastbencode is not None}, indent=1))
        return
    fast = fastbencode is not None
    header = (f"{'message':31} {'bytes':>5} {'decode_msg':>10} {'encode_msg':>10} "
              f"{'strict dec':>10} {'bpy dec':>8} {'bpy enc':>8}"
              + (f" {'fast dec':>8} {'fast enc':>8}" if fast else ""))
    print("microseconds per message")
    print(header)
    print("-" * len(header))
    for row in rows:
        line = (f"{row['message']:31} {row['bytes']:>5} {row['decode_message_us']:>10} "
                f"{row['encode_message_us']:>10} {row['strict_bencode_decode_us']:>10} "
                f"{row['bencodepy_decode_us']:>8} {row['bencodepy_encode_us']:>8}")
        if fast:
            line += f" {row['fastbencode_decode_us']:>8} {row['fastbencode_encode_us']:>8}"
        print(line)
    print("decode_msg / encode_msg: mldht.krpc.decode_message / encode_message; strict dec: "
          "krpc.decode_bencode (bencode.py with mldht's length check); bpy: stock bencode.py"
          + ("; fast: fastbencode" if fast else "; fastbencode not installed"))
    if fast:
        decode = sum(r["bencodepy_decode_us"] for r in rows) / sum(r["fastbencode_decode_us"] for r in rows)
        encode = sum(r["bencodepy_encode_us"] for r in rows) / sum(r["fastbencode_encode_us"] for r in rows)
        print(f"fastbencode vs bencode.py over these messages: decode {decode:.1f}x, "
              f"encode {encode:.1f}x faster")


if __name__ == "__main__":
    main()
