"""What a traversal asks and keeps: `TraversalSpec` and the specs of find_node, get_peers
(with BEP 33 scrape) and BEP 44 get. An application subclasses `TraversalSpec` for a
traversal of its own (`Engine.start_traversal`); `traversal.TraversalRun` drives any of them."""

from __future__ import annotations

from typing import Any

from ..bep33 import ScrapeMerger
from ..bep44 import Item, bencode as bencode_value
from ..compact import Address
from ..ids import NodeId
from ..krpc import FindNode, Get, GetPeers, Query, Response
from .results import LookupSummary


class TraversalSpec:
    """What one traversal asks, and what it keeps of the answers.

    Subclass it for a traversal of your own: `query(sender_id)` builds the query sent to
    each node (the engine sets the transaction id, `ro` and `v`); `on_response` sees every
    answer (with the peers in it not seen before, for get_peers-like queries); `stop()`
    ends the traversal early; `result(summary)` is what the operation returns. One spec is
    shared by the runs of both families of a dual-stack engine.
    """

    kind = "traversal"
    lookup_k: int | None = None
    """How many closest nodes must have answered before the traversal ends (None: k)."""

    def __init__(self, target: bytes) -> None:
        self.target = NodeId(target)

    def query(self, sender_id: NodeId) -> Query:
        raise NotImplementedError

    def on_response(self, address: Address, response: Response, fresh_peers: list[Address],
                    now: float) -> None:
        pass

    def stop(self) -> bool:
        return False

    def result(self, summary: LookupSummary) -> Any:
        return summary


class FindNodeSpec(TraversalSpec):
    """find_node towards `target`: the result is the `LookupSummary` (its `closest`)."""

    kind = "find_node"

    def query(self, sender_id: NodeId) -> Query:
        return FindNode(transaction_id=b"", sender_id=sender_id, target=self.target)


class GetPeersSpec(TraversalSpec):
    """get_peers for an infohash; with `scrape`, unites the BEP 33 filters of the replies."""

    kind = "get_peers"

    def __init__(self, target: bytes, scrape: bool = False) -> None:
        super().__init__(target)
        self.merger = ScrapeMerger() if scrape else None

    def query(self, sender_id: NodeId) -> Query:
        return GetPeers(transaction_id=b"", sender_id=sender_id, info_hash=self.target,
                        scrape=self.merger is not None)

    def on_response(self, address, response, fresh_peers, now) -> None:
        if self.merger is not None:
            self.merger.add(response.extra)

    def result(self, summary: LookupSummary) -> LookupSummary:
        if self.merger is not None:
            summary.scrape = self.merger.estimate()
        return summary


def item_in(response: Response, salt: bytes) -> Item | None:
    """The BEP 44 item a `get` reply carries (still to be verified); None when its fields
    are malformed."""
    extra = response.extra
    try:
        encoded = bencode_value(extra[b"v"])
    except Exception:  # a value that cannot be encoded back: not an item
        return None
    public_key, signature, seq = extra.get(b"k"), extra.get(b"sig"), extra.get(b"seq")
    if public_key is None and signature is None:
        return Item(value=extra[b"v"], encoded=encoded)
    if not (isinstance(public_key, bytes) and isinstance(signature, bytes)
            and isinstance(seq, int)):
        return None
    return Item(value=extra[b"v"], encoded=encoded, public_key=public_key, salt=salt, seq=seq,
                signature=signature)


class GetItemSpec(TraversalSpec):
    """BEP 44 get: every item returned is verified against the target before it counts."""

    kind = "get"

    def __init__(self, target: bytes, salt: bytes = b"", stop_at_immutable: bool = True) -> None:
        super().__init__(target)
        self.salt = salt
        self.stop_at_immutable = stop_at_immutable
        self.found: dict[Address, Item] = {}
        self.invalid = 0

    def query(self, sender_id: NodeId) -> Query:
        return Get(transaction_id=b"", sender_id=sender_id, target=self.target)

    def on_response(self, address, response, fresh_peers, now) -> None:
        if b"v" not in response.extra:
            return  # no item here: just nodes
        item = item_in(response, self.salt)
        if item is not None and item.is_valid_for(self.target):
            self.found[address] = item
        else:
            self.invalid += 1

    def stop(self) -> bool:
        return self.stop_at_immutable and any(not i.is_mutable for i in self.found.values())

    def latest(self) -> Item | None:
        """An immutable item if one was found, else the mutable one with the highest seq."""
        items = list(self.found.values())
        for item in items:
            if not item.is_mutable:
                return item
        return max(items, key=lambda item: item.seq, default=None)
