"""The exception hierarchy of mldht: everything it raises derives from `MldhtError`."""

from __future__ import annotations


class MldhtError(Exception):
    """Base class of every error raised by mldht."""


class InvalidInput(MldhtError, ValueError):
    """A value given by the user or the caller is not acceptable (bad hex, bad address...)."""


class KrpcDecodeError(MldhtError):
    """A datagram is not a valid KRPC message.

    `transaction_id` is set when the datagram was a bencoded dictionary carrying a
    byte-string `t`, so that a query can still be answered with error 203;
    `is_query` tells whether the sender meant it as a query (`y` = `q`).
    """

    def __init__(self, message: str, transaction_id: bytes | None = None,
                 is_query: bool = False) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id
        self.is_query = is_query


class QueryTimeout(MldhtError, TimeoutError):
    """A remote node did not answer a query in time."""


class RemoteError(MldhtError):
    """A remote node answered a query with a KRPC error message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"KRPC error {code}: {message}")
        self.code = code
        self.message = message


class TransportClosed(MldhtError):
    """The node is not running, so nothing can be sent."""


class QueryNotSent(MldhtError):
    """A query was dropped before it left (the outbound queue was full, the destination is
    blocklisted, or the operation or node was closed): nothing is known about the node."""


class JoinFailed(MldhtError):
    """Bootstrapping reached nobody: no router or saved node answered (the message says
    which were tried and what failed)."""

    def __init__(self, message: str, tried: list[str] | None = None) -> None:
        super().__init__(message)
        self.tried = tried or []
