"""Bencode, the DHT's wire encoding: one codec for every module that reads or writes it.

fastbencode (a Rust codec, a dependency wherever it has wheels) on the common path, with
bencode.py deciding whatever the fast one refuses and standing in where it is missing.
This module sits at the bottom of the wire modules, beside `ids` and `compact`: it imports
none of them.
"""

from __future__ import annotations

from typing import Any

import bencodepy

_codec = bencodepy.Bencode(encoding=None, encoding_fallback=None, dict_ordered=False)


class _StrictDecoder(bencodepy.BencodeDecoder):
    """bencode.py parses a dictionary key's length with int(), so a negative length
    ("d1:ai1e-6:") moves it backwards and it loops forever: accept only plain digits."""

    def decode_string(self, x, f, kind="value", **kwargs):
        if not x[f:x.index(b":", f)].isdigit():
            raise ValueError("invalid string length")
        return super().decode_string(x, f, kind, **kwargs)


_decoder = _StrictDecoder(encoding=None, encoding_fallback=None, dict_ordered=False)

try:
    # A dependency wherever it has wheels (CPython): a Rust codec about 20x faster at decoding,
    # with bencode.py the fallback where it is missing. It only
    # accepts canonical bencode, so anything it refuses goes through bencode.py, which
    # decides: the two backends give the same results, the fast one on the common path.
    import fastbencode as _fast
except ImportError:  # pragma: no cover - depends on the installation
    _fast = None

_use_fast = _fast is not None


def codec_backend() -> str:
    """Which bencode codec is in use: "fastbencode" or "bencode.py"."""
    return "fastbencode" if _use_fast else "bencode.py"


def use_codec(backend: str) -> None:
    """Select the codec ("fastbencode" when installed, or "bencode.py"): for tests and
    benchmarks that compare them."""
    global _use_fast
    if backend == "fastbencode" and _fast is None:
        raise ValueError("fastbencode is not installed (pip install fastbencode)")
    if backend not in ("fastbencode", "bencode.py"):
        raise ValueError(f"unknown codec {backend!r}")
    _use_fast = backend == "fastbencode"


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value; raises whatever the backend raises on bad input
    (callers turn it into their own error)."""
    if _use_fast:
        try:
            return _fast.bdecode(data)
        except Exception:  # not canonical, or not bencode: bencode.py has the last word
            pass
    return _decoder.decode(data)


def encode_bencode(value: Any) -> bytes:
    """Canonical bencode (dictionary keys sorted as raw bytes)."""
    return _fast.bencode(value) if _use_fast else _codec.encode(value)


def decode_bencode(data: bytes) -> Any:
    """Decode any bencoded value (strings as bytes) with the datagram decoder's strictness;
    raises ValueError when `data` is not one well-formed value."""
    try:
        return bdecode(data)
    except Exception as exc:  # bencodepy raises several types
        raise ValueError(f"not valid bencode: {exc}") from None
