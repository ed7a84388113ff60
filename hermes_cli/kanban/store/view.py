"""Read-only SQL for live views (the TUI): paged columns, filtered counts, task titles.

Pages follow the `tasks_claim_order` index (status, priority DESC, created_at) exactly, with no extra tie-break
column, so a page deep in a 100,000-task column is an index walk (about 1 ms), not a sort.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.models import Task, TaskStatus
from .connection import Database
from .tasks import TASK_COLUMNS


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _filters(search: str | None, tenant: str | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if search:
        # LIKE is case-insensitive for ASCII; an id prefix matches too (t_3fa finds t_3fa2c1...).
        where.append("(title LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\')")
        params.extend([_like(search), _like(search)[1:]])
    if tenant:
        where.append("tenant = ?")
        params.append(tenant)
    return where, params


def column_page(
    db: Database, status: str, *, offset: int, limit: int, search: str | None = None, tenant: str | None = None
) -> list[Task]:
    where, params = _filters(search, tenant)
    clause = " AND ".join(["status = ?", *where])
    rows = db.rows(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE {clause} ORDER BY priority DESC, created_at ASC LIMIT ? OFFSET ?",
        (status, *params, limit, offset),
    )
    return [Task.from_row(r) for r in rows]


def counts(db: Database, *, search: str | None = None, tenant: str | None = None) -> dict[str, int]:
    where, params = _filters(search, tenant)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    found = {r["status"]: r["n"] for r in db.rows(f"SELECT status, count(*) AS n FROM tasks {clause} GROUP BY status",
                                                   params)}
    return {str(s): int(found.get(str(s), 0)) for s in TaskStatus}


def titles(db: Database, task_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(task_ids))
    if not ids:
        return {}
    rows = db.rows(f"SELECT id, title FROM tasks WHERE id IN ({','.join('?' * len(ids))})", ids)
    return {r["id"]: r["title"] for r in rows}

