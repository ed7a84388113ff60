"""SQL for the board-level dispatcher lease (table `dispatcher_lease`, one row at most; schema v2).

The row names the holder (host, pid, process start time), its epoch and when it was acquired and last refreshed. No
row means no dispatcher. Epochs are never reused: the last one handed out is kept in `meta` (`dispatcher_epoch`), so
a released-then-reacquired lease still gets a new epoch. Callers hold the write transaction (see Database.write).
"""

from __future__ import annotations

from typing import Any

from .connection import Database

EPOCH_KEY = "dispatcher_epoch"
COLUMNS = "host, pid, pid_create_time, epoch, acquired_at, refreshed_at"


def get(db: Database) -> dict[str, Any] | None:
    return db.row(f"SELECT {COLUMNS} FROM dispatcher_lease WHERE id = 1")


def next_epoch(db: Database) -> int:
    """Hand out the next epoch (one more than any epoch ever handed out on this board)."""
    last = db.value("SELECT value FROM meta WHERE key = ?", (EPOCH_KEY,))
    held = db.value("SELECT epoch FROM dispatcher_lease WHERE id = 1")
    epoch = max(int(last or 0), int(held or 0)) + 1
    db.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (EPOCH_KEY, str(epoch)),
    )
    return epoch


def put(db: Database, *, host: str, pid: int, pid_create_time: float | None, epoch: int, now: float) -> None:
    """Install a new holder (replacing any previous row)."""
    db.execute(
        "INSERT INTO dispatcher_lease(id, host, pid, pid_create_time, epoch, acquired_at, refreshed_at) "
        "VALUES (1, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
        "pid_create_time = excluded.pid_create_time, epoch = excluded.epoch, acquired_at = excluded.acquired_at, "
        "refreshed_at = excluded.refreshed_at",
        (host, pid, pid_create_time, epoch, now, now),
    )


def refresh(db: Database, epoch: int, now: float) -> bool:
    """Move `refreshed_at` forward, only while `epoch` still holds the lease. Returns whether it did."""
    db.execute("UPDATE dispatcher_lease SET refreshed_at = ? WHERE id = 1 AND epoch = ?", (now, epoch))
    return db.changes() == 1


def delete(db: Database, epoch: int) -> bool:
    """Remove the lease, only if `epoch` holds it. Returns whether a row was removed."""
    db.execute("DELETE FROM dispatcher_lease WHERE id = 1 AND epoch = ?", (epoch,))
    return db.changes() == 1
