"""The local record of a board's hub sync, for doctor: backlog (events after the checkpoint) and the last error.

The last error lives in a small file per hub in `<board dir>/sync/` (not in the board): the failure it records may be
the board itself refusing writes (the checkpoint could not be written), and doctor must still see it. The file is
written by the sync that holds the lease for that (board, hub), replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from ..core.errors import HermesError
from ..core.fileio import write_json_atomic
from ..core.hubconf import configured_hub, redact, sync_disabled
from ..core.paths import BoardPaths, ensure_private_dir
from ..store import sync as sync_sql
from ..store.connection import Database

#: a backlog whose oldest event waited longer than this is worth a warning (the sync runs, or it is stuck)
STALE_S = 300.0


def status_dir(paths: BoardPaths) -> Path:
    return paths.dir / "sync"


def status_path(paths: BoardPaths, hub: str) -> Path:
    return status_dir(paths) / (hashlib.sha256(hub.encode()).hexdigest()[:16] + ".json")


def read_status(paths: BoardPaths, hub: str) -> dict[str, Any]:
    try:
        data = json.loads(status_path(paths, hub).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        return {"last_error": f"unreadable sync status file {status_path(paths, hub)}: {exc}"}
    return data if isinstance(data, dict) else {}


def write_status(paths: BoardPaths, hub: str, **fields: Any) -> None:
    """Merge `fields` into the hub's status file. Never raises: a status that cannot be written must not stop a
    sync (its exit code and stderr still say what happened)."""
    data = read_status(paths, hub)
    data.update(fields, hub=hub, updated_at=time.time())
    try:
        ensure_private_dir(status_dir(paths))
        write_json_atomic(status_path(paths, hub), data, durable=False)
    except (OSError, ValueError) as exc:
        data["status_error"] = str(exc)  # nowhere else to put it; the caller's own error line reports the failure


def record_error(paths: BoardPaths, hub: str, message: str, failures: int) -> None:
    write_status(paths, hub, last_error=message, error_at=time.time(), failures=failures)


def record_ok(paths: BoardPaths, hub: str, acked: int) -> None:
    write_status(paths, hub, last_error=None, failures=0, acked=acked, last_ok_at=time.time())


def hubs_of(db: Database) -> tuple[list[str], str | None]:
    """The hubs this board syncs to (the configured one and every one with a checkpoint in the board), and the
    error of a malformed hub configuration (reported by doctor, never raised: doctor must finish)."""
    names = set(sync_sql.checkpoints(db))
    try:
        configured = configured_hub()
    except HermesError as exc:
        return sorted(names), exc.message
    if configured is not None:
        names.add(redact(configured))
    return sorted(names), None


def summary(db: Database, paths: BoardPaths, now: float | None = None) -> list[dict[str, Any]]:
    """Per hub: {hub, checkpoint, pending, oldest_s, last_error, error_at, off}; [] when no hub is involved."""
    now = time.time() if now is None else now
    out = []
    marks = sync_sql.checkpoints(db)
    hubs, config_error = hubs_of(db)
    if config_error is not None:
        out.append({"hub": "(configured hub)", "checkpoint": 0, "pending": sync_sql.backlog(db, 0)[0],
                    "oldest_s": None, "last_error": config_error, "error_at": None, "last_ok_at": None,
                    "off": sync_disabled()})
    for hub in hubs:
        mark = marks.get(hub, 0)
        pending, oldest = sync_sql.backlog(db, mark)
        status = read_status(paths, hub)
        out.append({
            "hub": hub, "checkpoint": mark, "pending": pending,
            "oldest_s": None if oldest is None else round(max(0.0, now - oldest), 1),
            "last_error": status.get("last_error"), "error_at": status.get("error_at"),
            "last_ok_at": status.get("last_ok_at"), "off": sync_disabled(),
        })
    return out


def line(s: dict[str, Any]) -> str:
    """`sync: N pending, oldest Xs, last error ...` (doctor's message)."""
    oldest = "" if s["oldest_s"] is None else f", oldest {s['oldest_s']:.0f}s"
    error = f", last error: {s['last_error']}" if s.get("last_error") else ", last error: none"
    off = " (HERMES_KANBAN_SYNC=off)" if s["off"] else ""
    return f"sync to {s['hub']}{off}: {s['pending']} pending{oldest}{error}"


def needs_attention(s: dict[str, Any]) -> bool:
    return bool(s.get("last_error")) or (s["oldest_s"] is not None and s["oldest_s"] > STALE_S and not s["off"])
