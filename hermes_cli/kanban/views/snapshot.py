"""Read-only queries for live views of a board (the TUI), sized for 100,000-task boards.

Nothing here loads a whole column: columns are read a page at a time (`column_page`) and counted with one GROUP BY
(`counts`). Every function takes an open `Board` and is meant to run off the UI thread.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from dataclasses import dataclass

from ..core.models import Task
from ..core.textsafe import strip_csi, terminal_safe
from ..core.values import check_task_id
from ..domain.board import Board
from ..durability.doctor import doctor
from ..store import leases as leases_sql
from ..store import view as view_sql
from ..store.engine import is_postgres

#: tasks per page of a column
PAGE = 100
#: how much of a worker log the detail pane reads (from the end)
LOG_TAIL_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class Filter:
    """What a view shows: a search text (title substring or id prefix) and/or a tenant."""

    search: str | None = None
    tenant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Filter:
        """`"deploy tenant:ops"` -> search "deploy", tenant "ops"."""
        words, tenant = [], None
        for word in (text or "").split():
            if word.startswith("tenant:") and len(word) > len("tenant:"):
                tenant = word[len("tenant:"):]
            else:
                words.append(word)
        return cls(search=" ".join(words) or None, tenant=tenant)

    def __str__(self) -> str:
        parts = [self.search or ""]
        if self.tenant:
            parts.append(f"tenant:{self.tenant}")
        return " ".join(p for p in parts if p)

    @property
    def active(self) -> bool:
        return bool(self.search or self.tenant)


def column_page(board: Board, status: str, page: int, flt: Filter = Filter(), size: int = PAGE) -> list[Task]:
    """Page `page` (0-based) of one status column, in claim order (priority DESC, oldest first)."""
    return view_sql.column_page(board.db, status, offset=page * size, limit=size, search=flt.search,
                                tenant=flt.tenant)


def counts(board: Board, flt: Filter = Filter()) -> dict[str, int]:
    """Tasks per status (every status present, zeros included) under the filter."""
    return view_sql.counts(board.db, search=flt.search, tenant=flt.tenant)


def titles(board: Board, task_ids: list[str]) -> dict[str, str]:
    return view_sql.titles(board.db, task_ids)


@dataclass(frozen=True, slots=True)
class DispatcherInfo:
    """Who holds the board's dispatcher lease, and how fresh it is."""

    host: str
    pid: int
    epoch: int
    acquired_at: float
    refreshed_at: float
    #: on a PostgreSQL board, how many dispatchers are registered (this one is the most recently heard from); 0 on a
    #: SQLite board, whose one dispatcher holds the lease
    fleet: int = 0

    @property
    def holder(self) -> str:
        return f"{self.host}:{self.pid}"

    def age(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - self.refreshed_at)

    @property
    def local(self) -> bool:
        return self.host == socket.gethostname()


def dispatcher(board: Board) -> DispatcherInfo | None:
    if is_postgres(board.db):
        # Many dispatchers serve a PostgreSQL board, each registered with a heartbeat (dispatch/fleet.py).
        from ..store.pg import dispatchers as fleet_sql

        registered = fleet_sql.all_registered(board.db)
        if not registered:
            return None
        last = max(registered, key=lambda r: float(r["heartbeat_at"]))
        return DispatcherInfo(host=last["host"], pid=int(last["pid"]), epoch=int(last["id"]),
                              acquired_at=float(last["started_at"]), refreshed_at=float(last["heartbeat_at"]),
                              fleet=len(registered))
    row = leases_sql.get(board.db)
    if row is None:
        return None
    return DispatcherInfo(host=row["host"], pid=int(row["pid"]), epoch=int(row["epoch"]),
                          acquired_at=float(row["acquired_at"]), refreshed_at=float(row["refreshed_at"]))


@dataclass(frozen=True, slots=True)
class HealthInfo:
    """doctor's result: its level (`ok`, `info`, `warn` or `fail`), the worst finding in one line (`check: message`,
    empty when healthy) and its verdict (`healthy`, `unhealthy (warn)`, `unhealthy (fail)`)."""

    status: str
    detail: str = ""
    verdict: str = ""


def health(board: Board) -> HealthInfo:
    """`hermes_cli.kanban.durability.doctor.doctor` on the board, exactly as `hermes kanban doctor` runs it, so a live
    view shows the verdict the command gives (a real quick_check each time: ~50 ms at 50,000 tasks)."""
    report = doctor(board.paths)
    worst = report.worst
    return HealthInfo(report.level, "" if worst is None else f"{worst.check}: {worst.message}", report.verdict)


def log_tail(board: Board, task_id: str, lines: int = 20) -> list[str]:
    """The last `lines` lines of a task's worker log (`<board dir>/logs/<task>.log`), terminal-safe: colours and
    cursor moves (CSI) dropped, every other control sequence (OSC, DCS, C1, lone ESC) shown as a visible escape.
    A missing log gives []; a symlink or non-regular file in its place is refused (never followed)."""
    path = board.paths.logs_dir / f"{check_task_id(task_id)}.log"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"(cannot read {path.name}: {exc.strerror})"]
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return [f"({path.name} is not a regular file; not shown)"]
        start = max(0, st.st_size - LOG_TAIL_BYTES)
        data = os.pread(fd, LOG_TAIL_BYTES, start)
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace")
    out = text.splitlines()
    if start > 0 and out:
        out = out[1:]  # the first line is probably cut
    return [terminal_safe(strip_csi(line)).replace("\t", "    ") for line in out[-lines:]]
