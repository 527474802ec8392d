"""Who we are on each family: our node id, and our external IP learned by agreement of the
nodes that answer us (BEP 42); when it is known and our id does not match it, a new id.
"""

from __future__ import annotations

from ..bep42 import ExternalIpVoter, is_secure_id, secure_node_id
from ..compact import normalize_ip
from ..ids import NodeId


class Identity:
    """One family's node id and external-IP vote."""

    def __init__(self, node_id: NodeId, explicit: bool, min_votes: int,
                 adopt_secure_id: bool) -> None:
        self.node_id = node_id
        self.explicit = explicit
        """Given by the caller (or a state file's owner asked for it): never changed."""
        self.voter = ExternalIpVoter(min_votes)
        self.adopt_secure_id = adopt_secure_id

    @property
    def external_ip(self) -> str | None:
        return self.voter.external_ip

    def vote(self, voter_ip: str, reported_ip: str) -> str | None:
        """Count a reply's `ip` key; returns the external IP when this vote settled a new one."""
        try:
            reported = normalize_ip(reported_ip)
        except ValueError:
            return None
        return self.voter.vote(voter_ip, reported)

    def voters_for(self, ip: str) -> int:
        return self.voter.tally().get(ip, 0)

    def new_id_for(self, external_ip: str, rng) -> NodeId | None:
        """The BEP 42 id to move to now that `external_ip` is known, or None to stay."""
        if not self.adopt_secure_id or self.explicit or is_secure_id(self.node_id, external_ip):
            return None
        return secure_node_id(external_ip, rng)
