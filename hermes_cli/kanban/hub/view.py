"""A read-only view of boards on the hub, for live views (the TUI's hub view): the reads `views.snapshot` gives of a
`Board` (counts, paged columns, titles, a task's detail), over the hub's latest task snapshots, plus what a poll
needs to see that new events arrived (each board's ack). It has no method that writes: a hub view cannot change a
task (the board's host is the source of truth)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ..core.errors import NotFound
from ..core.models import Event, Task, TaskDetail, TaskStatus
from ..store.hub import reads, schema
from ..store.hub import view as view_sql
from ..store.hub.link import HubLink

#: tasks per page of a column (as views.snapshot.PAGE)
PAGE = 100
#: at most this many new events per board are read per poll (for toasts; the columns are re-read whole)
EVENTS_PER_POLL = 200


@dataclass(frozen=True, slots=True)
class BoardMark:
    """One board of the view as the hub has it: its label (HOST:SLUG), newest event id and that event's time."""

    board_id: str
    label: str
    acked: int
    last_at: float | None


class HubView:
    """Boards `board` (an id, a slug or HOST:SLUG; None: every board on the hub) on the hub at `url`. One connection;
    close it (or use it as a context manager). Raises HubMissing, HubUnreachable, or NotFound for an unknown board."""

    def __init__(self, url: str, board: str | None = None) -> None:
        self.link = HubLink(url)
        try:
            schema.check_readable(self.link)
            self.board_ids: list[str] | None = None
            if board is not None:
                self.board_ids = reads.board_ids(self.link, board)
                if not self.board_ids:
                    raise NotFound(f"board {board} is not on {self.link.where} (see: hermes kanban hub boards)")
        except BaseException:
            self.link.close()
            raise

    @property
    def name(self) -> str:
        """The hub's URL without its password."""
        return self.link.name

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> HubView:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- what a board view reads -------------------------------------------------------------------------------------
    def counts(self, search: str | None = None, tenant: str | None = None) -> dict[str, int]:
        """Tasks per status (every status present, zeros included) under the filter."""
        found = view_sql.counts(self.link, self.board_ids, search=search, tenant=tenant)
        return {str(s): found.get(str(s), 0) for s in TaskStatus}

    def column_page(self, status: str, page: int, search: str | None = None, tenant: str | None = None,
                    size: int = PAGE) -> list[Task]:
        rows = view_sql.column_page(self.link, self.board_ids, status, offset=page * size, limit=size, search=search,
                                    tenant=tenant)
        return [Task.from_row(r) for r in rows]

    def titles(self, task_ids: list[str]) -> dict[str, str]:
        return view_sql.titles(self.link, self.board_ids, task_ids)

    def detail(self, task_id: str, events: int = 20) -> tuple[TaskDetail, str]:
        """The task as the hub has it, with its newest `events` events, and the label of its board (HOST:SLUG). The
        hub keeps tasks and events only: runs, links and comments stay on the board's host (empty here)."""
        row = view_sql.task(self.link, self.board_ids, task_id)
        if row is None:
            raise NotFound(f"task {task_id} is not on {self.link.where} (see: hermes kanban hub list)")
        evs = tuple(_event(e) for e in view_sql.task_events(self.link, row["board_id"], task_id, events))
        return TaskDetail(Task.from_row(row), (), (), (), (), evs), f"{row['host']}:{row['board']}"

    # -- what a live view polls --------------------------------------------------------------------------------------
    def marks(self) -> list[BoardMark]:
        """Every board of the view with the newest event the hub has of it (one cheap query: poll it)."""
        return [BoardMark(str(r["board_id"]), f"{r['host']}:{r['slug']}", int(r["acked"]),
                          None if r["last_at"] is None else float(r["last_at"]))
                for r in view_sql.acks(self.link, self.board_ids)]

    def events_between(self, before: list[BoardMark], now: list[BoardMark]) -> list[Event]:
        """The events that arrived between two `marks()` (at most EVENTS_PER_POLL per board, the newest)."""
        old = {m.board_id: m.acked for m in before}
        out: list[Event] = []
        for m in now:
            if m.acked > old.get(m.board_id, 0):
                out += [_event(e) for e in view_sql.events_after(self.link, m.board_id, old.get(m.board_id, 0),
                                                                   m.acked, EVENTS_PER_POLL)]
        out.sort(key=lambda e: e.created_at)
        return out


def _event(row: dict[str, Any]) -> Event:
    payload = row["payload"]
    try:
        parsed = json.loads(payload) if isinstance(payload, str) else payload
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):  # not a JSON object (written into the hub by hand?): shown as stored
        parsed = {"payload": payload}
    return Event(id=int(row["id"]), task_id=row["task_id"], run_id=row["run_id"], kind=str(row["kind"]),
                 payload=parsed, created_at=float(row["created_at"]))
