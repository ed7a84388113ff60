"""Reading the hub across hosts and boards (`hermes kanban hub ...`)."""

from __future__ import annotations

from typing import Any

from ..tasks import TASK_COLUMNS
from .link import SCHEMA, HubLink

_NOW = "extract(epoch FROM clock_timestamp())"


def boards(link: HubLink) -> list[dict[str, Any]]:
    return link.rows(
        f"SELECT b.board_id, b.slug, b.host, b.writer_version, b.first_seen, b.last_seen, "
        f"coalesce(a.last_event_id, 0) AS acked, coalesce(a.events, 0) AS events, a.updated_at AS acked_at, "
        f"(SELECT count(*) FROM {SCHEMA}.tasks t WHERE t.board_id = b.board_id) AS tasks, "
        f"l.holder_host AS sync_host, l.holder_pid AS sync_pid, {_NOW} - l.refreshed_at AS sync_age "
        f"FROM {SCHEMA}.boards b LEFT JOIN {SCHEMA}.acks a USING (board_id) "
        f"LEFT JOIN {SCHEMA}.sync_leases l USING (board_id) ORDER BY b.host, b.slug, b.board_id")


def board_ids(link: HubLink, board: str) -> list[str]:
    """Board ids matching `board`: a board id, a slug, or host:slug."""
    host, _, slug = board.rpartition(":")
    if host:
        rows = link.rows(f"SELECT board_id FROM {SCHEMA}.boards WHERE host = %s AND slug = %s", (host, slug))
    else:
        rows = link.rows(f"SELECT board_id FROM {SCHEMA}.boards WHERE board_id = %s OR slug = %s", (board, board))
    return [str(r["board_id"]) for r in rows]


def tasks(link: HubLink, *, board_ids: list[str] | None, statuses: list[str] | None,
          limit: int) -> list[dict[str, Any]]:
    where: list[str] = ["true"]
    params: list[Any] = []
    if board_ids is not None:
        where.append("t.board_id = ANY(%s)")
        params.append(board_ids)
    if statuses:
        where.append("t.status = ANY(%s)")
        params.append(statuses)
    params.append(limit)
    cols = ", ".join(f"t.{c.strip()}" for c in TASK_COLUMNS.split(","))
    return link.rows(
        f"SELECT t.board_id, b.slug AS board, b.host, {cols}, t.as_of_event, t.synced_at FROM {SCHEMA}.tasks t "
        f"JOIN {SCHEMA}.boards b USING (board_id) WHERE {' AND '.join(where)} "
        "ORDER BY t.priority DESC, t.created_at, t.board_id, t.id LIMIT %s", params)


def task(link: HubLink, task_id: str, board_ids: list[str] | None) -> list[dict[str, Any]]:
    where = "t.id = %s"
    params: list[Any] = [task_id]
    if board_ids is not None:
        where += " AND t.board_id = ANY(%s)"
        params.append(board_ids)
    cols = ", ".join(f"t.{c.strip()}" for c in TASK_COLUMNS.split(","))
    return link.rows(f"SELECT t.board_id, b.slug AS board, b.host, {cols}, t.as_of_event, t.synced_at "
                     f"FROM {SCHEMA}.tasks t JOIN {SCHEMA}.boards b USING (board_id) WHERE {where}", params)


def events(link: HubLink, *, board_ids: list[str] | None, task_id: str | None, after: int,
           limit: int) -> list[dict[str, Any]]:
    where: list[str] = ["e.id > %s"]
    params: list[Any] = [after]
    if board_ids is not None:
        where.append("e.board_id = ANY(%s)")
        params.append(board_ids)
    if task_id is not None:
        where.append("e.task_id = %s")
        params.append(task_id)
    params.append(limit)
    return link.rows(
        f"SELECT e.board_id, b.slug AS board, b.host, e.id, e.task_id, e.run_id, e.kind, e.payload, e.created_at, "
        f"e.received_at FROM {SCHEMA}.events e JOIN {SCHEMA}.boards b USING (board_id) "
        f"WHERE {' AND '.join(where)} ORDER BY e.created_at, e.board_id, e.id LIMIT %s", params)


def stats(link: HubLink, board_ids: list[str] | None) -> list[dict[str, Any]]:
    where = "true"
    params: list[Any] = []
    if board_ids is not None:
        where = "board_id = ANY(%s)"
        params.append(board_ids)
    return link.rows(f"SELECT board_id, status, count(*) AS n FROM {SCHEMA}.tasks WHERE {where} "
                     "GROUP BY board_id, status ORDER BY board_id, status", params)


def all_events(link: HubLink, board_id: str) -> list[dict[str, Any]]:
    return link.rows(f"SELECT id, task_id, run_id, kind, payload, created_at FROM {SCHEMA}.events "
                     "WHERE board_id = %s ORDER BY id", (board_id,))
