"""SQL for the dispatchers of a fleet serving one PostgreSQL board (table `dispatchers`, pg schema v2).

Each dispatcher registers (host, pid, process start time, started_at) and heartbeats its row; `lease_s` says how long
after its last heartbeat the others may take it for gone. Every time is the database server's clock (the caller passes
`db.clock()`), so hosts whose clocks disagree judge the same registration alike. A run a dispatcher started carries its
registration id (`runs.dispatcher_id`), set in the transaction that claimed it. Callers hold the write transaction
(PgDatabase.write) for every statement that changes something.
"""

from __future__ import annotations

from typing import Any, Protocol

COLUMNS = "id, host, pid, pid_create_time, started_at, heartbeat_at, lease_s"


class _Db(Protocol):
    def rows(self, sql: str, params: Any = ()) -> list[dict[str, Any]]: ...

    def row(self, sql: str, params: Any = ()) -> dict[str, Any] | None: ...

    def value(self, sql: str, params: Any = ()) -> Any: ...

    def execute(self, sql: str, params: Any = ()) -> None: ...

    def changes(self) -> int: ...


def register(db: _Db, *, host: str, pid: int, pid_create_time: float | None, lease_s: float, now: float) -> int:
    """A new registration; returns its id (never reused: an identity column)."""
    return int(db.value(
        "INSERT INTO dispatchers(host, pid, pid_create_time, started_at, heartbeat_at, lease_s) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (host, pid, pid_create_time, now, now, lease_s),
    ))


def beat(db: _Db, dispatcher_id: int, now: float) -> bool:
    """Move the heartbeat forward; False when the registration is gone (removed by another after it lapsed)."""
    db.execute("UPDATE dispatchers SET heartbeat_at = ? WHERE id = ?", (now, dispatcher_id))
    return db.changes() == 1


def get(db: _Db, dispatcher_id: int) -> dict[str, Any] | None:
    return db.row(f"SELECT {COLUMNS} FROM dispatchers WHERE id = ?", (dispatcher_id,))


def all_registered(db: _Db) -> list[dict[str, Any]]:
    return db.rows(f"SELECT {COLUMNS} FROM dispatchers ORDER BY id")


def remove(db: _Db, dispatcher_id: int) -> bool:
    db.execute("DELETE FROM dispatchers WHERE id = ?", (dispatcher_id,))
    return db.changes() == 1


def remove_lapsed(db: _Db, now: float, *, keep: int | None = None) -> list[dict[str, Any]]:
    """Remove the registrations whose last heartbeat is older than their lease (except `keep`); returns them."""
    return db.rows(
        f"DELETE FROM dispatchers WHERE heartbeat_at + lease_s < ? AND id IS DISTINCT FROM ? RETURNING {COLUMNS}",
        (now, keep),
    )


def own_run(db: _Db, run_id: int, dispatcher_id: int) -> None:
    """Mark `run_id` as started by this dispatcher (in the transaction that claimed it)."""
    db.execute("UPDATE runs SET dispatcher_id = ? WHERE id = ?", (dispatcher_id, run_id))


def reown_open_runs(db: _Db, old_id: int, new_id: int) -> int:
    """A dispatcher registered anew takes its open runs along (so no other dispatcher adopts them)."""
    db.execute("UPDATE runs SET dispatcher_id = ? WHERE dispatcher_id = ? AND ended_at IS NULL", (new_id, old_id))
    return db.changes()


def foreign_open_runs(db: _Db, dispatcher_id: int) -> set[int]:
    """Open runs started by another dispatcher that is still registered: theirs to supervise, never ours."""
    rows = db.rows(
        "SELECT r.id FROM runs r JOIN dispatchers d ON d.id = r.dispatcher_id "
        "WHERE r.ended_at IS NULL AND r.dispatcher_id <> ?",
        (dispatcher_id,),
    )
    return {int(r["id"]) for r in rows}


def running_count(db: _Db) -> int:
    """Tasks running on the whole board (every host's): what a board-wide limit counts."""
    return int(db.value("SELECT count(*) FROM tasks WHERE status = 'running'") or 0)
