"""The board-level dispatcher lease: one active dispatcher per board.

The lease names its holder (host, pid, process start time) and carries an epoch that is never reused. The holder
refreshes it from a heartbeat thread; another dispatcher takes it over when the last refresh is older than the grace
period, or at once when the holder runs on this host and is provably gone (no process with its pid and start time:
killed, crashed, or its pid reused by another process). A live holder is never taken over within the grace. Otherwise a
one-pass dispatcher goes away (`skipped: lease held by ...`) and a long-running one stands by (holding.py). The
dispatcher's claims check the epoch inside their own transaction (`check_held`), so a dispatcher that lost its lease
(paused past the grace, lock broken) cannot start anything afterwards, even before its heartbeat notices.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core import procs
from ..core.errors import LeaseHeld
from ..core.models import iso
from ..domain.board import Board
from ..store import leases as sql
from ..store import tasks as tasks_sql

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DispatcherLease:
    host: str
    pid: int
    pid_create_time: float | None
    epoch: int
    acquired_at: float
    refreshed_at: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DispatcherLease:
        return cls(**row)

    @property
    def holder(self) -> str:
        return f"{self.host}:{self.pid}"

    def age(self, now: float | None = None) -> float:
        """Seconds since the last refresh."""
        return max(0.0, (time.time() if now is None else now) - self.refreshed_at)

    def describe(self, now: float | None = None) -> str:
        return f"{self.holder} (epoch {self.epoch}, refreshed {self.age(now):.1f}s ago)"

    def is_mine(self) -> bool:
        host, pid, started = procs.identity()
        return self.host == host and self.pid == pid and procs.same_start(self.pid_create_time, started)

    def local_state(self) -> procs.ProcState | None:
        """The holder's process state when it runs on this host (None: another host, cannot tell)."""
        if self.host != procs.HOST:
            return None
        return procs.state(self.pid, self.pid_create_time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "holder": self.holder, "host": self.host, "pid": self.pid, "epoch": self.epoch,
            "acquired_at": iso(self.acquired_at), "refreshed_at": iso(self.refreshed_at),
            "age_s": round(self.age(), 3),
        }


def _write(board: Board, fn: Callable[[float], T]) -> T:
    """One write transaction; the events it writes ring the doorbell after COMMIT (store.tasks.add_event)."""
    return board.db.write(lambda: fn(board.db.clock()))


def read_lease(board: Board) -> DispatcherLease | None:
    """The current lease, if any (doctor shows it; a lease older than the grace period is stale)."""
    row = sql.get(board.db)
    return None if row is None else DispatcherLease.from_row(row)


def holder_gone(lease: DispatcherLease) -> bool:
    """The holder runs on this host and is provably gone: no process with its pid, or one that started at another
    time (the pid was reused), or a zombie. Never true for a holder on another host (cannot tell from here)."""
    return lease.local_state() == procs.ProcState.DEAD


def keeps_others_out(lease: DispatcherLease, *, grace: float, now: float | None = None) -> bool:
    """Whether `lease` stops this process from taking the board: held by another process, refreshed within `grace`,
    and not held by a process provably gone from this host. Reads only (a standby checks this before any write)."""
    if lease.is_mine() or lease.age(now) > grace:
        return False
    return not holder_gone(lease)


def acquire(board: Board, *, grace: float) -> tuple[DispatcherLease, DispatcherLease | None]:
    """Take the lease. Returns (our lease, the lease we took over or None). Raises LeaseHeld when another holder
    refreshed it within `grace` seconds and is not provably gone (`keeps_others_out`)."""
    host, pid, started = procs.identity()

    def tx(now: float) -> tuple[DispatcherLease, DispatcherLease | None]:
        row = sql.get(board.db)
        previous = None if row is None else DispatcherLease.from_row(row)
        if previous is not None and keeps_others_out(previous, grace=grace, now=now):
            raise LeaseHeld(f"lease held by {previous.describe(now)}")
        epoch = sql.next_epoch(board.db)
        sql.put(board.db, host=host, pid=pid, pid_create_time=started, epoch=epoch, now=now)
        tasks_sql.add_event(
            board.db, "dispatcher_started", now, host=host, pid=pid, epoch=epoch,
            took_over_from=None if previous is None else previous.holder,
            took_over_epoch=None if previous is None else previous.epoch,
        )
        lease = DispatcherLease(host, pid, started, epoch, now, now)
        return lease, previous

    return _write(board, tx)


def refresh(board: Board, epoch: int) -> bool:
    """Heartbeat: returns False when `epoch` no longer holds the lease. Not a state change: no event, no ring."""
    return _write(board, lambda now: sql.refresh(board.db, epoch, now))  # no event: a refresh is not a change


def check_held(board: Board, epoch: int) -> None:
    """Inside a write transaction: raise LeaseHeld unless `epoch` still holds the lease."""
    row = sql.get(board.db)
    if row is None or row["epoch"] != epoch:
        now = time.time()
        who = "nobody" if row is None else DispatcherLease.from_row(row).describe(now)
        raise LeaseHeld(f"dispatcher lease (epoch {epoch}) was lost; it is now held by {who}")


def release(board: Board, epoch: int, *, reason: str) -> bool:
    """Give the lease up (only if `epoch` still holds it)."""

    def tx(now: float) -> bool:
        if not sql.delete(board.db, epoch):
            return False
        tasks_sql.add_event(board.db, "dispatcher_stopped", now, epoch=epoch, reason=reason)
        return True

    return _write(board, tx)


def break_lock(board: Board, *, max_age: float) -> DispatcherLease | None:
    """Remove a lease whose last refresh is older than `max_age` seconds, or whose holder is provably gone from this
    host (`holder_gone`: as `acquire` would take it over anyway). Returns the removed lease (None if there was none).
    Never removes a live one: raises LeaseHeld if it was refreshed within `max_age` by a holder not provably gone, or
    if its holder runs on this host and is alive and not paused."""

    def tx(now: float) -> DispatcherLease | None:
        row = sql.get(board.db)
        if row is None:
            return None
        lease = DispatcherLease.from_row(row)
        if lease.is_mine():
            return None
        if lease.age(now) <= max_age and not holder_gone(lease):
            raise LeaseHeld(
                f"dispatcher lease held by {lease.describe(now)}, younger than --max-age {max_age:g}s; "
                "not breaking a live lease"
            )
        if lease.local_state() == procs.ProcState.ALIVE:
            raise LeaseHeld(
                f"dispatcher lease held by {lease.describe(now)}: its process is alive on this host; "
                f"not breaking a live lease (stop it: kill {lease.pid})"
            )
        sql.delete(board.db, lease.epoch)
        tasks_sql.add_event(
            board.db, "dispatcher_lock_broken", now, holder=lease.holder, epoch=lease.epoch,
            age_s=round(lease.age(now), 3), max_age_s=max_age,
        )
        return lease

    return _write(board, tx)
