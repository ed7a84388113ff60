"""SQL for tasks, links, runs, comments and events. Callers hold the write transaction (see Database.write)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..core.errors import NotFound
from ..core.models import Comment, Event, Run, Task, TaskStatus
from .connection import Database

TASK_COLUMNS = (
    "id, title, body, status, priority, tenant, command, idempotency_key, review_required, max_runtime_s, "
    "max_retries, attempts, current_run_id, lease_expires_at, retry_at, summary, created_at, updated_at, completed_at, "
    "assignee, created_by, skills, result, block_kind, workspace, branch"
)
RUN_COLUMNS = (
    "id, task_id, worker, host, pid, pid_create_time, started_at, heartbeat_at, lease_expires_at, ended_at, outcome, "
    "summary, exit_code, result, metadata"
)
SATISFIED = "('done','archived')"


# -- events ------------------------------------------------------------------------------------------------------------
#: one encoder for every event payload (json.dumps with these options builds a new JSONEncoder per call)
_PAYLOAD = json.JSONEncoder(separators=(",", ":"), default=str)


def add_event(
    db: Database, kind: str, now: float, task_id: str | None = None, run_id: int | None = None, **payload: Any
) -> None:
    db.note_event()
    db.execute(
        "INSERT INTO events(task_id, run_id, kind, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        (task_id, run_id, kind, _PAYLOAD.encode(payload), now),
    )


def events_after(
    db: Database,
    cursor: int = 0,
    *,
    task_id: str | None = None,
    kinds: Sequence[str] | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[Event]:
    where: list[str] = ["id > ?"]
    params: list[int | str] = [cursor]
    if task_id is not None:
        where.append("task_id = ?")
        params.append(task_id)
    if kinds:
        where.append(f"kind IN ({','.join('?' * len(kinds))})")
        params.extend(kinds)
    order = "DESC" if newest_first else "ASC"
    sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id {order}"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [Event.from_row(r) for r in db.rows(sql, params)]


def last_event_id(db: Database) -> int:
    return int(db.value("SELECT coalesce(max(id), 0) FROM events"))


# -- tasks -------------------------------------------------------------------------------------------------------------
def get_task(db: Database, task_id: str) -> Task:
    row = db.row(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
    if row is None:
        raise NotFound(f"task {task_id} not found (see: hermes kanban list)")
    return Task.from_row(row)


def find_by_idempotency_key(db: Database, key: str) -> Task | None:
    row = db.row(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE idempotency_key = ? AND status != 'archived'", (key,)
    )
    return None if row is None else Task.from_row(row)


def task_exists(db: Database, task_id: str) -> bool:
    return db.value("SELECT 1 FROM tasks WHERE id = ?", (task_id,)) is not None


def insert_task(db: Database, values: dict[str, Any]) -> None:
    cols = ", ".join(values)
    db.execute(f"INSERT INTO tasks({cols}) VALUES ({', '.join('?' * len(values))})", tuple(values.values()))


def update_task(db: Database, task_id: str, now: float, **values: Any) -> None:
    values["updated_at"] = now
    sets = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE tasks SET {sets} WHERE id = ?", (*values.values(), task_id))


def list_tasks(
    db: Database,
    *,
    statuses: Iterable[str] | None = None,
    tenant: str | None = None,
    parent: str | None = None,
    search: str | None = None,
    sort: str = "priority",
    limit: int | None = None,
    offset: int = 0,
    assignee: str | None = None,
) -> list[Task]:
    where: list[str] = []
    params: list[Any] = []
    if assignee is not None:
        where.append("assignee = ?")
        params.append(assignee)
    statuses = list(statuses or [])
    if statuses:
        where.append(f"status IN ({','.join('?' * len(statuses))})")
        params.extend(statuses)
    else:
        where.append("status != 'archived'")
    if tenant is not None:
        where.append("tenant = ?")
        params.append(tenant)
    if parent is not None:
        where.append("id IN (SELECT child_id FROM links WHERE parent_id = ?)")
        params.append(parent)
    if search:
        where.append("(instr(lower(title), lower(?)) > 0 OR id = ?)")
        params.extend([search, search])
    order = {
        "priority": "priority DESC, created_at ASC",
        "age": "created_at ASC",
        "newest": "created_at DESC",
        "updated": "updated_at DESC",
        **EXTRA_SORTS,
    }[sort]
    sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE {' AND '.join(where)} ORDER BY {order}, id"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        params.extend([limit, offset])
    return [Task.from_row(r) for r in db.rows(sql, params)]


#: hermes-agent's `list --sort` orders that ours did not have (priority/age/newest/updated are above)
EXTRA_SORTS = {
    "created": "created_at ASC",
    "created-desc": "created_at DESC",
    "priority-desc": "priority DESC, created_at ASC",
    "status": "CASE status WHEN 'triage' THEN 0 WHEN 'todo' THEN 1 WHEN 'ready' THEN 2 WHEN 'running' THEN 3 "
              "WHEN 'review' THEN 4 WHEN 'blocked' THEN 5 WHEN 'done' THEN 6 ELSE 7 END, priority DESC",
    "assignee": "assignee IS NULL, assignee, priority DESC",
    "title": "lower(title)",
}


def count_by_status(db: Database, tenant: str | None = None) -> dict[str, int]:
    if tenant is None:
        rows = db.rows("SELECT status, count(*) AS n FROM tasks GROUP BY status")
    else:
        rows = db.rows("SELECT status, count(*) AS n FROM tasks WHERE tenant = ? GROUP BY status", (tenant,))
    counts = {str(s): 0 for s in TaskStatus}
    counts.update({r["status"]: r["n"] for r in rows})
    return counts


# -- dependencies ------------------------------------------------------------------------------------------------------
def prefixed_columns(prefix: str) -> str:
    """TASK_COLUMNS qualified by a table alias (`t.id, t.title, ...`) for joins."""
    return ", ".join(f"{prefix}.{c.strip()}" for c in TASK_COLUMNS.split(","))


#: the task columns of a join with `tasks t` (computed once)
_T_COLUMNS = prefixed_columns("t")


def parents(db: Database, task_id: str) -> list[Task]:
    cols = _T_COLUMNS
    return [
        Task.from_row(r)
        for r in db.rows(
            f"SELECT {cols} FROM links l JOIN tasks t ON t.id = l.parent_id WHERE l.child_id = ? ORDER BY t.created_at",
            (task_id,),
        )
    ]


def children(db: Database, task_id: str) -> list[Task]:
    cols = _T_COLUMNS
    return [
        Task.from_row(r)
        for r in db.rows(
            f"SELECT {cols} FROM links l JOIN tasks t ON t.id = l.child_id WHERE l.parent_id = ? ORDER BY t.created_at",
            (task_id,),
        )
    ]


def unfinished_parent_count(db: Database, task_id: str) -> int:
    return int(
        db.value(
            f"SELECT count(*) FROM links l JOIN tasks t ON t.id = l.parent_id "
            f"WHERE l.child_id = ? AND t.status NOT IN {SATISFIED}",
            (task_id,),
        )
    )


def is_ancestor(db: Database, maybe_ancestor: str, task_id: str) -> bool:
    """Whether `maybe_ancestor` is `task_id` or one of its ancestors (so linking task_id -> it makes a cycle)."""
    return (
        db.value(
            """
            WITH RECURSIVE up(id) AS (
                SELECT ? UNION SELECT l.parent_id FROM links l JOIN up ON l.child_id = up.id
            )
            SELECT 1 FROM up WHERE id = ? LIMIT 1
            """,
            (task_id, maybe_ancestor),
        )
        is not None
    )


def add_link(db: Database, parent_id: str, child_id: str, now: float) -> bool:
    if db.value("SELECT 1 FROM links WHERE parent_id = ? AND child_id = ?", (parent_id, child_id)):
        return False
    db.execute("INSERT INTO links(parent_id, child_id, created_at) VALUES (?, ?, ?)", (parent_id, child_id, now))
    return True


def remove_link(db: Database, parent_id: str, child_id: str) -> bool:
    if not db.value("SELECT 1 FROM links WHERE parent_id = ? AND child_id = ?", (parent_id, child_id)):
        return False
    db.execute("DELETE FROM links WHERE parent_id = ? AND child_id = ?", (parent_id, child_id))
    return True


def children_probe(parent_id: str) -> tuple[str, tuple[str]]:
    """A query finding a row when task `parent_id` has children (links' primary key: a few microseconds)."""
    return "SELECT 1 FROM links WHERE parent_id = ? LIMIT 1", (parent_id,)


def todo_children_ready_to_promote(db: Database, parent_id: str) -> list[str]:
    # Most finished tasks have no children. A probe of links' primary key says so in a few microseconds; the join
    # below cost ~80 us even on an empty links table (measured in a write transaction, bench/profile_store.py).
    if db.first(*children_probe(parent_id)) is None:
        return []
    rows = db.rows(
        f"""
        SELECT c.id FROM links l JOIN tasks c ON c.id = l.child_id
        WHERE l.parent_id = ? AND c.status = 'todo'
          AND NOT EXISTS (
            SELECT 1 FROM links l2 JOIN tasks p ON p.id = l2.parent_id
            WHERE l2.child_id = c.id AND p.status NOT IN {SATISFIED}
          )
        """,
        (parent_id,),
    )
    return [r["id"] for r in rows]


# -- runs --------------------------------------------------------------------------------------------------------------
def insert_run(
    db: Database,
    task_id: str,
    now: float,
    lease_expires_at: float,
    worker: str | None,
    host: str | None,
    pid: int | None,
    pid_create_time: float | None,
) -> int:
    return int(db.value(
        "INSERT INTO runs(task_id, worker, host, pid, pid_create_time, started_at, heartbeat_at, lease_expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (task_id, worker, host, pid, pid_create_time, now, now, lease_expires_at),
    ))


def get_run(db: Database, run_id: int) -> Run | None:
    row = db.row(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
    return None if row is None else Run.from_row(row)


def runs_for(db: Database, task_id: str) -> list[Run]:
    rows = db.rows(f"SELECT {RUN_COLUMNS} FROM runs WHERE task_id = ? ORDER BY id", (task_id,))
    return [Run.from_row(r) for r in rows]


def open_runs(db: Database) -> list[Run]:
    return [Run.from_row(r) for r in db.rows(f"SELECT {RUN_COLUMNS} FROM runs WHERE ended_at IS NULL ORDER BY id")]


def close_run(
    db: Database, run_id: int, outcome: str, now: float, summary: str | None = None, exit_code: int | None = None
) -> None:
    db.execute(
        "UPDATE runs SET ended_at = ?, outcome = ?, summary = ?, exit_code = ? WHERE id = ? AND ended_at IS NULL",
        (now, outcome, summary, exit_code, run_id),
    )


def set_run_process(db: Database, run_id: int, pid: int, pid_create_time: float | None, host: str | None) -> None:
    db.execute(
        "UPDATE runs SET pid = ?, pid_create_time = ?, host = ? WHERE id = ?", (pid, pid_create_time, host, run_id)
    )


def extend_run_lease(db: Database, run_id: int, now: float, lease_expires_at: float) -> None:
    db.execute("UPDATE runs SET heartbeat_at = ?, lease_expires_at = ? WHERE id = ?", (now, lease_expires_at, run_id))


#: the order of the ready queue, for pull workers (claim) and the dispatcher (store/dispatch.py) alike: priority,
#: then age, exactly the `tasks_claim_order` index, so the head is the index's first entry. No id tie-break: tasks
#: that share an instant (created in one transaction) then go in the index's own order (insertion order on SQLite,
#: the rows' physical order on PostgreSQL), for claims and the dispatcher alike. With `id` appended, every claim on
#: a PostgreSQL board sorted all the ties first: 1-3 ms per claim with 3,000 tasks created in one transaction.
CLAIM_ORDER = "priority DESC, created_at ASC"


def claimable_task_id(db: Database, now: float, tenant: str | None = None) -> str | None:
    if tenant is None:
        return db.value(
            "SELECT id FROM tasks WHERE status = 'ready' AND (retry_at IS NULL OR retry_at <= ?) "
            f"ORDER BY {CLAIM_ORDER} LIMIT 1",
            (now,),
        )
    return db.value(
        "SELECT id FROM tasks WHERE status = 'ready' AND tenant = ? AND (retry_at IS NULL OR retry_at <= ?) "
        f"ORDER BY {CLAIM_ORDER} LIMIT 1",
        (tenant, now),
    )


#: what a claim sets on its task (`run`: where the new run's id comes from); lease_expires_at, updated_at bound
_MARK_RUNNING = ("status = 'running', attempts = attempts + 1, current_run_id = {run}, lease_expires_at = ?, "
                 "retry_at = NULL, updated_at = ?")


def claim_next_ready(
    db: Database,
    now: float,
    lease_expires_at: float,
    worker: str | None,
    host: str | None,
    pid: int | None,
    pid_create_time: float | None,
    tenant: str | None = None,
    *,
    unless_expired: bool = False,
) -> tuple[int, str, int] | None:
    """Open a run on the head of the ready queue (CLAIM_ORDER): the run row, and the task `running` under it with
    its lease. Returns (run id, task id, attempt number), or None when nothing is ready. The caller holds the write
    transaction, so the head cannot change in between.

    `unless_expired`: claim nothing (None) while a running task's lease has expired, so that the caller reclaims
    first (a reclaimed task may be the better head). The check rides in the claim's own statement: in the common
    case (no expired lease) a claim is one statement on PostgreSQL and two on SQLite, instead of a probe first."""
    where = "status = 'ready' AND (retry_at IS NULL OR retry_at <= ?)"
    params: tuple[Any, ...] = (worker, host, pid, pid_create_time, now, now, lease_expires_at, now)
    if tenant is not None:
        where = "status = 'ready' AND tenant = ? AND (retry_at IS NULL OR retry_at <= ?)"
        params = (worker, host, pid, pid_create_time, now, now, lease_expires_at, tenant, now)
    if unless_expired:
        where += " AND NOT EXISTS (SELECT 1 FROM tasks WHERE status = 'running' AND lease_expires_at < ?)"
        params += (now,)
    open_run = (
        "INSERT INTO runs(task_id, worker, host, pid, pid_create_time, started_at, heartbeat_at, lease_expires_at) "
        f"SELECT id, ?, ?, ?, ?, ?, ?, ? FROM tasks WHERE {where} ORDER BY {CLAIM_ORDER} LIMIT 1 RETURNING id, task_id"
    )
    if db.engine == "postgres":
        # One statement, one round trip inside the board's writers' turn (PostgreSQL runs data-modifying CTEs;
        # SQLite does not): the run is inserted, and the task marked from its RETURNING row.
        row = db.first(
            f"WITH r AS ({open_run}) UPDATE tasks SET {_MARK_RUNNING.format(run='r.id')} FROM r "
            "WHERE tasks.id = r.task_id RETURNING r.id, r.task_id, tasks.attempts",
            (*params, lease_expires_at, now),
        )
        return None if row is None else (int(row[0]), str(row[1]), int(row[2]))
    opened = db.first(open_run, params)
    if opened is None:
        return None
    run_id, task_id = int(opened[0]), str(opened[1])
    attempt = db.first(
        f"UPDATE tasks SET {_MARK_RUNNING.format(run='?')} WHERE id = ? RETURNING attempts",
        (run_id, lease_expires_at, now, task_id),
    )
    assert attempt is not None, f"task {task_id} vanished inside its claim transaction"
    return run_id, task_id, int(attempt[0])


def complete_current_run(db: Database, task_id: str, run_id: int, now: float,
                         summary: str | None) -> tuple[Task, bool] | None:
    """The fenced completion of a task that is not review-gated, in one statement: `done` only while `run_id` is the
    task's current run (status running, current_run_id = run_id, the check Board._fenced makes). Returns the task
    as it is now with whether it has children (so the caller promotes them; most tasks have none, and the same
    statement says so), or None with nothing changed (stale run, review gate, unknown task: the caller's careful
    path decides which)."""
    row = db.first(
        "UPDATE tasks SET status = 'done', summary = ?, completed_at = ?, current_run_id = NULL, "
        "lease_expires_at = NULL, retry_at = NULL, updated_at = ? "
        "WHERE id = ? AND status = 'running' AND current_run_id = ? AND review_required = 0 "
        f"RETURNING {TASK_COLUMNS}, EXISTS (SELECT 1 FROM links WHERE parent_id = tasks.id)",
        (summary, now, now, task_id, run_id),
    )
    # TASK_COLUMNS is Task's fields in order (tests/store/test_write_path.py checks it): a tuple, not a dict per row
    return None if row is None else (Task(*row[:-1]), bool(row[-1]))


def expired_running(db: Database, now: float) -> list[Task]:
    return [
        Task.from_row(r)
        for r in db.rows(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'running' AND lease_expires_at < ? "
            "ORDER BY lease_expires_at",
            (now,),
        )
    ]


# -- comments ----------------------------------------------------------------------------------------------------------
def insert_comment(db: Database, task_id: str, author: str | None, body: str, now: float) -> Comment:
    comment_id = db.value(
        "INSERT INTO comments(task_id, author, body, created_at) VALUES (?, ?, ?, ?) RETURNING id",
        (task_id, author, body, now),
    )
    return Comment(int(comment_id), task_id, author, body, now)


def comments_for(db: Database, task_id: str) -> list[Comment]:
    return [Comment.from_row(r) for r in db.rows("SELECT * FROM comments WHERE task_id = ? ORDER BY id", (task_id,))]


# -- hermes-agent vocabulary: assignees, reports with results, hard delete, garbage collection -----------------------
def count_by_assignee(db: Database) -> list[dict[str, Any]]:
    """(assignee, status, n) for every task that is not archived; assignee None for unassigned tasks."""
    return db.rows(
        "SELECT assignee, status, count(*) AS n FROM tasks WHERE status != 'archived' "
        "GROUP BY assignee, status ORDER BY assignee IS NULL, assignee, status"
    )


def set_run_report(db: Database, run_id: int, result: str | None, metadata: dict[str, Any] | None) -> None:
    db.execute(
        "UPDATE runs SET result = ?, metadata = ? WHERE id = ?",
        (result, None if metadata is None else json.dumps(metadata, separators=(",", ":")), run_id),
    )


def latest_finished_run(db: Database, task_id: str, outcomes: Sequence[str]) -> Run | None:
    row = db.row(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE task_id = ? AND outcome IN ({','.join('?' * len(outcomes))}) "
        "ORDER BY id DESC LIMIT 1",
        (task_id, *outcomes),
    )
    return None if row is None else Run.from_row(row)


def delete_task(db: Database, task_id: str) -> None:
    """Remove a task with its links, runs and comments. Its events stay: they are the audit trail."""
    db.execute("DELETE FROM links WHERE parent_id = ? OR child_id = ?", (task_id, task_id))
    db.execute("DELETE FROM comments WHERE task_id = ?", (task_id,))
    db.execute("DELETE FROM runs WHERE task_id = ?", (task_id,))
    db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))


def min_subscription_cursor(db: Database) -> int | None:
    return db.value("SELECT min(cursor) FROM subscriptions")


def gc_events(db: Database, before: float, up_to_id: int | None) -> int:
    """Delete events older than `before` of tasks that are done, archived or deleted, with ids <= `up_to_id`
    (None: no limit). Board-wide events (no task) are kept."""
    where = (
        "created_at < ? AND task_id IS NOT NULL "
        "AND task_id NOT IN (SELECT id FROM tasks WHERE status NOT IN ('done','archived'))"
    )
    params: list[Any] = [before]
    if up_to_id is not None:
        where += " AND id <= ?"
        params.append(up_to_id)
    n = int(db.value(f"SELECT count(*) FROM events WHERE {where}", params))
    if n:
        db.execute(f"DELETE FROM events WHERE {where}", params)
    return n


def meta_get(db: Database, key: str) -> str | None:
    return db.value("SELECT value FROM meta WHERE key = ?", (key,))


def meta_set(db: Database, key: str, value: str | None) -> None:
    if value is None:
        db.execute("DELETE FROM meta WHERE key = ?", (key,))
    else:
        db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                   (key, value))
