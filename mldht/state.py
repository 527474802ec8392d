"""The node's persistent state: its id and good nodes, in a JSON file written atomically."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .compact import NodeInfo, normalize_ip
from .errors import InvalidInput
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


def check_state_path(path: str | os.PathLike) -> None:
    """Raise `InvalidInput` naming `path` when a state file could not be written there: a
    directory, a missing parent directory, or no write permission (checked at start, not
    found out at shutdown)."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInput(f"state file {str(path)!r} is a directory")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InvalidInput(f"state file {str(path)!r}: its folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInput(f"state file {str(path)!r}: cannot write in {str(folder)!r}")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise InvalidInput(f"state file {str(path)!r} is not readable and writable")


def _keep_aside(path: Path, why: str) -> None:
    """A damaged state file is renamed, never overwritten: it may be worth a look."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        log.warning("state file %s is unusable (%s) and could not be moved aside: %s",
                    path, why, exc)
        return
    log.warning("state file %s is unusable (%s): kept as %s; starting afresh", path, why, aside)


def load_state(path: str | os.PathLike, max_nodes: int = 1000) -> SavedState:
    """Read a state file; a missing file gives an empty state, a damaged or foreign one
    (not JSON, or no mldht `format` 1) is renamed aside (FILE.damaged-TIME) with a
    one-line warning and an empty state is returned; an unreadable one is left alone,
    with a warning."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SavedState()
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError):
            _keep_aside(path, f"not JSON: {exc}")
        else:
            log.warning("ignoring unreadable state file %s: %s", path, exc)
        return SavedState()
    state = SavedState()
    if not isinstance(document, dict):
        _keep_aside(path, "not a JSON object")
        return state
    if document.get("format") != FORMAT_VERSION:
        # Another program's file, or a later mldht's: kept for whoever owns it.
        _keep_aside(path, f"not an mldht state file of format {FORMAT_VERSION} "
                          f"(format {document.get('format')!r})")
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
