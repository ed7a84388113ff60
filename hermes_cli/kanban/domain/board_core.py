"""The plumbing every part of a Board shares: its Database, paths and host, one write transaction per change, events,
and the rules' constants. Part of Board (domain/board.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Self, TypeVar

from ..core.models import Task, iso
from ..core.paths import BoardPaths
from ..core.values import check_task_id
from ..store import tasks as sql
from ..store.connection import Database

T = TypeVar("T")

#: lease of a claim when the caller does not say (seconds); workers heartbeat well within it
DEFAULT_LEASE_S = 120.0
DEFAULT_MAX_RETRIES = 3
#: backoff before retry n is BACKOFF_BASE_S * 2**(n-1), jittered +-25%, capped
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
#: board settings kept in the board itself (`boards create --name ...`, `boards rename`)
BOARD_SETTINGS = ("name", "description", "icon", "color", "default_workdir")
SORTS = ("priority", "age", "newest", "updated", *sql.EXTRA_SORTS)


def retry_delay(attempt: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Exponential backoff with jitter for the retry after failed attempt number `attempt` (1-based)."""
    import random  # here: only a failed attempt needs it; the hot worker commands start faster without it

    raw = min(cap, base * 2 ** max(0, attempt - 1))
    return raw * random.uniform(0.75, 1.25)


class NothingToClaim(Exception):
    """Raised inside a claim transaction that found no ready task, to roll it back."""


def new_task_id() -> str:
    return "t_" + os.urandom(6).hex()  # os.urandom is what secrets uses, without importing hashlib on the CLI path


def iso_text(ts: float) -> str:
    return iso(ts) or ""


class BoardCore:
    """The plumbing every part of a Board shares: its Database, paths and host, one write transaction per change,
    events, and the rules' constants."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.paths: BoardPaths = db.paths
        self._host = os.uname().nodename  # = socket.gethostname(), without importing socket on the CLI path

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def slug(self) -> str:
        return self.paths.slug

    @property
    def created(self) -> bool:
        """Whether this open created the board (its database file did not exist)."""
        return self.db.created

    def _write(self, fn: Callable[[float], T], *, late_turn: bool = False) -> T:
        """Run `fn(now)` in one write transaction. Every event it writes rings the doorbell after COMMIT.
        `late_turn`: see PgDatabase.write (a PostgreSQL board); `fn` then calls db.need_turn() / db.check_at_turn()."""
        return self.db.write(lambda: fn(self.db.clock()), late_turn=late_turn)

    def _event(
        self, kind: str, now: float, task_id: str | None = None, run_id: int | None = None, **payload: Any
    ) -> None:
        sql.add_event(self.db, kind, now, task_id, run_id, **payload)

    def note_workspace(self, task_id: str, kind: str, **payload: Any) -> None:
        """Record what became of a finished task's git worktree (dispatch/workspaces.py release):
        `workspace_removed` {path, branch, branch_deleted} or `workspace_kept` {path, branch, reason}."""
        assert kind in ("workspace_removed", "workspace_kept"), kind
        check_task_id(task_id)
        self._write(lambda now: self._event(kind, now, task_id, **payload))

    def _todo_or_ready(self, task_id: str) -> str:
        """Where a task goes back to when it is free to run again: `todo` while a parent is unfinished, else `ready`
        (retry, reclaim, unblock, request changes)."""
        return "todo" if sql.unfinished_parent_count(self.db, task_id) else "ready"

    def _task(self, task_id: str) -> Task:
        return sql.get_task(self.db, check_task_id(task_id))
