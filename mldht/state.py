"""The node's persistent state: its id and good nodes, in a JSON file written atomically."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .compact import NodeInfo, normalize_ip
from .ids import NodeId

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass(slots=True)
class SavedState:
    node_id: NodeId | None = None
    nodes: list[NodeInfo] = field(default_factory=list)


def save_state(path: str | os.PathLike, node_id: NodeId, nodes: list[NodeInfo]) -> None:
    """Write the state to `path` atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    document = {
        "format": FORMAT_VERSION,
        "node_id": node_id.hex(),
        "nodes": [{"id": node.id.hex(), "ip": node.ip, "port": node.port} for node in nodes],
    }
    folder = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def load_state(path: str | os.PathLike, max_nodes: int = 1000) -> SavedState:
    """Read a state file; a missing file gives an empty state, a damaged one is logged and ignored."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SavedState()
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return SavedState()
    state = SavedState()
    if not isinstance(document, dict):
        log.warning("ignoring state file %s: not a JSON object", path)
        return state
    try:
        state.node_id = NodeId.from_hex(document.get("node_id", ""))
    except (ValueError, TypeError, AttributeError):
        log.warning("state file %s has no valid node_id; a new one will be chosen", path)
    for item in document.get("nodes", [])[:max_nodes]:
        try:
            state.nodes.append(NodeInfo(NodeId.from_hex(item["id"]), normalize_ip(item["ip"]),
                                        int(item["port"])))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    return state
