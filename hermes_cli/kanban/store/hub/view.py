"""Read-only SQL for a live view of the hub (the TUI's hub view): paged columns and filtered counts over the hub's
latest task snapshots, titles, a task's newest events, and each board's ack (what a poll compares to see that new
events arrived). Every query takes `board_ids` (None: every board on the hub)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..tasks import TASK_COLUMNS
from .link import SCHEMA, HubLink

_COLS = ", ".join(c.strip() for c in TASK_COLUMNS.split(","))


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(board_ids: list[str] | None, search: str | None, tenant: str | None) -> tuple[list[str], list[Any]]:
    """The same filter as a board's view (store/view.py): title substring (case-insensitive) or id prefix, tenant."""
    where: list[str] = []
    params: list[Any] = []
    if board_ids is not None:
        where.append("board_id = ANY(%s)")
        params.append(board_ids)
    if search:
        where.append("(title ILIKE %s ESCAPE '\\' OR id ILIKE %s ESCAPE '\\')")
        params.extend([_like(search), _like(search)[1:]])
    if tenant:
        where.append("tenant = %s")
        params.append(tenant)
    return where, params


def column_page(link: HubLink, board_ids: list[str] | None, status: str, *, offset: int, limit: int,
                search: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
    """One page of a status column in claim order (the `tasks_status` index: board, status, priority, created)."""
    where, params = _where(board_ids, search, tenant)
    clause = " AND ".join(["status = %s", *where])
    return link.rows(f"SELECT board_id, {_COLS} FROM {SCHEMA}.tasks WHERE {clause} "
                     "ORDER BY priority DESC, created_at, board_id, id LIMIT %s OFFSET %s",
                     [status, *params, limit, offset])


def counts(link: HubLink, board_ids: list[str] | None, *, search: str | None = None,
           tenant: str | None = None) -> dict[str, int]:
    where, params = _where(board_ids, search, tenant)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return {str(r["status"]): int(r["n"]) for r in
            link.rows(f"SELECT status, count(*) AS n FROM {SCHEMA}.tasks {clause} GROUP BY status", params)}


def titles(link: HubLink, board_ids: list[str] | None, task_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(task_ids))
    if not ids:
        return {}
    where, params = _where(board_ids, None, None)
    clause = " AND ".join(["id = ANY(%s)", *where])
    return {r["id"]: r["title"] for r in link.rows(f"SELECT id, title FROM {SCHEMA}.tasks WHERE {clause}",
                                                   [ids, *params])}


def task(link: HubLink, board_ids: list[str] | None, task_id: str) -> dict[str, Any] | None:
    """The task's snapshot (the first board holding that id, when several boards of the view do)."""
    where, params = _where(board_ids, None, None)
    clause = " AND ".join(["t.id = %s", *(f"t.{w}" for w in where)])
    return link.row(f"SELECT t.board_id, b.slug AS board, b.host, {', '.join('t.' + c for c in _COLS.split(', '))} "
                    f"FROM {SCHEMA}.tasks t JOIN {SCHEMA}.boards b USING (board_id) WHERE {clause} "
                    "ORDER BY b.host, b.slug, t.board_id LIMIT 1", [task_id, *params])


def task_events(link: HubLink, board_id: str, task_id: str, limit: int) -> list[dict[str, Any]]:
    """The task's newest `limit` events, oldest first."""
    rows = link.rows(f"SELECT id, task_id, run_id, kind, payload, created_at FROM {SCHEMA}.events "
                     "WHERE board_id = %s AND task_id = %s ORDER BY id DESC LIMIT %s", (board_id, task_id, limit))
    return rows[::-1]


def acks(link: HubLink, board_ids: list[str] | None) -> list[dict[str, Any]]:
    """Per board: its label, the newest event id the hub has (`acked`) and that event's time (`last_at`). Index
    lookups only, so a view can poll it every second."""
    where = "" if board_ids is None else "WHERE b.board_id = ANY(%s)"
    return link.rows(
        f"SELECT b.board_id, b.slug, b.host, coalesce(a.last_event_id, 0) AS acked, e.created_at AS last_at "
        f"FROM {SCHEMA}.boards b LEFT JOIN {SCHEMA}.acks a USING (board_id) "
        f"LEFT JOIN {SCHEMA}.events e ON e.board_id = a.board_id AND e.id = a.last_event_id {where} "
        "ORDER BY b.host, b.slug, b.board_id", None if board_ids is None else (board_ids,))


def events_after(link: HubLink, board_id: str, after: int, upto: int, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` events of a board in (after, upto], oldest first."""
    rows = link.rows(f"SELECT id, task_id, run_id, kind, payload, created_at FROM {SCHEMA}.events "
                     "WHERE board_id = %s AND id > %s AND id <= %s ORDER BY id DESC LIMIT %s",
                     (board_id, after, upto, limit))
    return rows[::-1]
