"""Many dispatchers, one board: a fleet of dispatchers on several hosts serving one PostgreSQL board (issue 13).

A SQLite board keeps its one-dispatcher lease (lease.py, holding.py). On a PostgreSQL board every dispatcher runs at
once instead, and:
- registers (host, pid, process start time) in `dispatchers` and heartbeats that row from its heartbeat thread;
  every time is the database server's clock (`db.clock()`), never a host's;
- fences each claim by its registration, in the claim's own transaction (`check_registered`): a dispatcher whose
  registration is gone starts nothing; the claimed run carries its registration id (`own_run`), in that same
  transaction, so a run is never without an owner;
- supervises only its own workers: the open runs of another registered dispatcher are never adopted or judged here
  (`foreign_runs`), even on the same host; runs of a dispatcher whose registration is gone may be adopted like any
  run left by an earlier dispatcher of this host;
- runs of a dead or partitioned host are reclaimed by lease expiry (their run leases stop being extended), by
  whichever dispatcher sees them expire first; its registration is removed once it lapsed (`remove_lapsed`);
- a dispatcher that finds its own registration gone (it lapsed while it was paused or cut off, and another removed it)
  stops its workers (their runs are reclaimed, or soon will be: their reports would be refused) and registers anew;
- board-wide limits hold across hosts: `max_running` is counted in the same SERIALIZABLE transaction that claims, so
  two hosts claiming at once cannot both take the last slot (PostgreSQL aborts one; the write is retried). The
  per-assignee limits (`[profiles.<name>] max_running`) are counted the same way, in the same transaction
  (selection.py `assignees_at_limit`, read by the claim's queue read in launch.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core import procs
from ..core.errors import HermesError
from ..domain.board import Board
from ..store import tasks as tasks_sql
from ..store.engine import is_postgres
from ..store.pg import dispatchers as sql


class RegistrationLost(HermesError):
    """This dispatcher's registration was removed by another (it lapsed): stop the workers and register anew."""

    code = "lease_lost"
    exit_code = 3


@dataclass(frozen=True, slots=True)
class Registration:
    id: int
    host: str
    pid: int
    started_at: float

    def describe(self) -> str:
        return f"dispatcher {self.id} ({self.host}:{self.pid})"


def is_fleet(board: Board) -> bool:
    """Whether this board is served by a fleet (PostgreSQL) rather than one lease holder (SQLite)."""
    return is_postgres(board.db)


def register(board: Board, *, lease_s: float, previous: int | None = None) -> Registration:
    """Register this process as one of the board's dispatchers (and remove the registrations that lapsed). With
    `previous` (our registration that was removed), our runs still open are carried over to the new one."""
    host, pid, started = procs.identity()
    db = board.db

    def tx() -> Registration:
        now = db.clock()
        _remove_lapsed(board, now, keep=None)
        rid = sql.register(db, host=host, pid=pid, pid_create_time=started, lease_s=lease_s, now=now)
        if previous is not None:
            sql.reown_open_runs(db, previous, rid)
        tasks_sql.add_event(db, "dispatcher_started", now, host=host, pid=pid, dispatcher_id=rid, epoch=rid,
                            fleet=True)
        return Registration(rid, host, pid, now)

    return db.write(tx)


def _remove_lapsed(board: Board, now: float, *, keep: int | None) -> list[dict[str, Any]]:
    gone = sql.remove_lapsed(board.db, now, keep=keep)
    for row in gone:
        tasks_sql.add_event(board.db, "dispatcher_stopped", now, dispatcher_id=row["id"], host=row["host"],
                            pid=row["pid"], reason="lapsed", silent_s=round(now - row["heartbeat_at"], 3),
                            removed_by=keep)
    return gone


def beat(board: Board, dispatcher_id: int) -> tuple[bool, list[dict[str, Any]]]:
    """Heartbeat our registration and remove the others that lapsed. Returns (still registered, removed rows)."""
    db = board.db

    def tx() -> tuple[bool, list[dict[str, Any]]]:
        now = db.clock()
        if not sql.beat(db, dispatcher_id, now):
            return False, []
        return True, _remove_lapsed(board, now, keep=dispatcher_id)

    return db.write(tx)


def check_registered(board: Board, dispatcher_id: int) -> None:
    """Inside a write transaction: raise RegistrationLost unless our registration is still there."""
    if sql.get(board.db, dispatcher_id) is None:
        raise RegistrationLost(f"dispatcher {dispatcher_id}'s registration was removed (it lapsed: paused or cut "
                               "off past its lease); stopping its workers and registering anew")


def own_run(board: Board, run_id: int, dispatcher_id: int) -> None:
    sql.own_run(board.db, run_id, dispatcher_id)


def at_limit(board: Board, max_running: int | None) -> bool:
    """Inside the claim's transaction: whether the board already runs `max_running` tasks (all hosts counted)."""
    return max_running is not None and sql.running_count(board.db) >= max_running


def foreign_runs(board: Board, dispatcher_id: int) -> set[int]:
    """Open runs that belong to another registered dispatcher (never adopted or judged here)."""
    return sql.foreign_open_runs(board.db, dispatcher_id)


def unregister(board: Board, dispatcher_id: int, *, reason: str) -> bool:
    db = board.db

    def tx() -> bool:
        if not sql.remove(db, dispatcher_id):
            return False
        tasks_sql.add_event(db, "dispatcher_stopped", db.clock(), dispatcher_id=dispatcher_id, reason=reason)
        return True

    return db.write(tx)


def registered(board: Board) -> list[dict[str, Any]]:
    """Every registration, with `silent_s` (seconds since its heartbeat, by the server's clock)."""
    with board.db.read():
        now = board.db.clock()
        return [{**row, "silent_s": round(now - row["heartbeat_at"], 3)} for row in sql.all_registered(board.db)]
