"""The local side of hub sync, in SQL: the board's stable id, the checkpoint per hub, the backlog, and reading a
batch of the outbox (the `events` table) with the snapshots of the tasks it touches.

The outbox is the event log itself: every change already writes its event in the same transaction as the change, so
"everything after the last acknowledged event id" is exactly what the hub has not seen. Keys in `meta`:
`board_id` (generated once) and `sync.checkpoint <hub>` (the last event id that hub acknowledged, as far as this host
knows; the hub's own ack is the truth, this copy feeds gc's floor and doctor's backlog).
"""

from __future__ import annotations

from typing import Any

from .connection import Database
from .tasks import TASK_COLUMNS, meta_get, meta_set

BOARD_ID_KEY = "board_id"
CHECKPOINT_PREFIX = "sync.checkpoint "


def checkpoint_key(hub: str) -> str:
    return CHECKPOINT_PREFIX + hub


def board_id(db: Database) -> str | None:
    return meta_get(db, BOARD_ID_KEY)


def set_board_id(db: Database, value: str) -> None:
    meta_set(db, BOARD_ID_KEY, value)


def checkpoint(db: Database, hub: str) -> int | None:
    raw = meta_get(db, checkpoint_key(hub))
    return None if raw is None else int(raw)


def set_checkpoint(db: Database, hub: str, event_id: int) -> None:
    meta_set(db, checkpoint_key(hub), str(int(event_id)))


def checkpoints(db: Database) -> dict[str, int]:
    """Every hub this board has synced to (or started to), with its checkpoint."""
    rows = db.rows(f"SELECT key, value FROM meta WHERE substr(key, 1, {len(CHECKPOINT_PREFIX)}) = ?",
                   (CHECKPOINT_PREFIX,))
    return {str(r["key"])[len(CHECKPOINT_PREFIX):]: int(r["value"]) for r in rows}


def gc_floor(db: Database, configured_hub: str | None) -> int | None:
    """The highest event id gc may delete as far as hubs are concerned: the lowest checkpoint, 0 when a configured
    hub has no checkpoint yet (it has acknowledged nothing), None when no hub is involved."""
    marks = checkpoints(db)
    if configured_hub is not None and configured_hub not in marks:
        return 0
    return min(marks.values()) if marks else None


def first_event_id(db: Database) -> int:
    """The oldest event still in the log (1 on a board gc never trimmed; 1 on an empty one)."""
    return int(db.value("SELECT coalesce(min(id), 1) FROM events"))


def backlog(db: Database, after: int) -> tuple[int, float | None]:
    """(events after `after`, created_at of the oldest of them)."""
    found = db.first("SELECT count(*), min(created_at) FROM events WHERE id > ?", (after,))
    assert found is not None
    return int(found[0]), (None if found[1] is None else float(found[1]))


def read_batch(db: Database, after: int, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The next `limit` events after `after`, the current rows of the tasks they touch, and the newest event id
    those rows reflect (read in one snapshot, so a task row is never older than the events sent with it)."""
    with db.read():
        events = db.rows("SELECT id, task_id, run_id, kind, payload, created_at FROM events WHERE id > ? "
                         "ORDER BY id LIMIT ?", (after, limit))
        ids = sorted({e["task_id"] for e in events if e["task_id"] is not None})
        tasks: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):  # SQLite's default limit of bound parameters is far above this
            chunk = ids[start:start + 500]
            tasks += db.rows(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        as_of = int(db.value("SELECT coalesce(max(id), 0) FROM events"))
    return events, tasks, as_of


def all_tasks(db: Database, after_id: str, limit: int) -> list[dict[str, Any]]:
    """Every task in id order, `limit` at a time (a board's first sync sends them all: some may have no event left)."""
    return db.rows(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
