"""Board files through the SQLite backup API (online backups, the staged copy of a restore), their id sequences,
the few health queries doctor needs, and salvage from an old board after a restore."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

from .checks import foreign_key_check, int_value, integrity_check
from .connection import Database
from .tasks import TASK_COLUMNS, add_event, insert_task

# -- backups through the SQLite backup API ---------------------------------------------------------------------------
#: pages copied per backup step when reporting progress
BACKUP_STEP_PAGES = 4096
#: a stepped backup restarts when another connection writes; after this many restarts finish in one step
BACKUP_MAX_RESTARTS = 3


def backup_into(src: apsw.Connection, dest: Path, progress: Callable[[int, int], None] | None = None) -> int:
    """Copy the database behind `src` into a new file `dest` (0600). Returns the page count.

    Without `progress`: one step (backup.html: a stepped backup restarts whenever another connection writes). With
    `progress`: steps of BACKUP_STEP_PAGES reporting (done, total); after BACKUP_MAX_RESTARTS restarts it finishes in
    one step so a busy board cannot starve it.
    """
    old_umask = os.umask(0o077)
    try:
        out = apsw.Connection(str(dest), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
                              | apsw.SQLITE_OPEN_NOFOLLOW)
    finally:
        os.umask(old_umask)
    try:
        with out.backup("main", src, "main") as b:
            if progress is None:
                b.step(-1)
            else:
                restarts, last_remaining = 0, None
                while not b.done:
                    step = -1 if restarts >= BACKUP_MAX_RESTARTS else BACKUP_STEP_PAGES
                    b.step(step)
                    total, remaining = b.page_count, b.remaining
                    if last_remaining is not None and remaining > last_remaining:
                        restarts += 1
                    last_remaining = remaining
                    progress(total - remaining, total)
        return int_value(out, "PRAGMA page_count")
    finally:
        out.close()


def finish_backup_copy(path: Path, *, journal_mode: str) -> list[str]:
    """integrity_check a fresh copy and set its journal mode (DELETE for a self-contained backup file, WAL for a
    board about to go live, switched under synchronous=EXTRA). Returns the problems ([] when ok)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_NOFOLLOW)
    try:
        conn.setbusytimeout(5000)
        problems = integrity_check(conn)
        if not problems:
            problems = foreign_key_check(conn)
        if not problems:
            conn.execute("PRAGMA synchronous=EXTRA")
            mode = conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchall()[0][0]
            if str(mode).lower() != journal_mode.lower():
                problems = [f"could not switch the copy to journal_mode={journal_mode} (got {mode})"]
        return problems
    finally:
        conn.close()


def read_backup_summary(path: Path) -> dict[str, Any]:
    """Schema version, task count and last event id of a backup file (opened read-only; DELETE-mode files only)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_NOFOLLOW)
    try:
        conn.setbusytimeout(5000)
        return {
            "schema_version": int_value(conn, "PRAGMA user_version"),
            "tasks": int_value(conn, "SELECT count(*) FROM tasks"),
            "last_event_id": int_value(conn, "SELECT coalesce(max(id), 0) FROM events"),
        }
    finally:
        conn.close()


def verify_file(path: Path) -> list[str]:
    """integrity_check of a backup file, opened read-only (a DELETE-mode backup needs no sidecars)."""
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_NOFOLLOW)
    except apsw.Error as exc:
        return [f"cannot open: {exc}"]
    try:
        conn.setbusytimeout(5000)
        return integrity_check(conn)
    except apsw.Error as exc:
        return [f"{exc.__class__.__name__}: {exc}"]
    finally:
        conn.close()


# -- board-level health queries ----------------------------------------------------------------------------------------
def dispatcher_lease(db: Database) -> dict[str, Any] | None:
    return db.row("SELECT host, pid, pid_create_time, epoch, acquired_at, refreshed_at FROM dispatcher_lease "
                  "WHERE id = 1")


def stale_claims(db: Database, now: float) -> list[dict[str, Any]]:
    """Running tasks whose lease has expired (the dispatcher reclaims them; without one they stay stuck)."""
    return db.rows(
        "SELECT id, current_run_id AS run_id, lease_expires_at FROM tasks WHERE status = 'running' "
        "AND lease_expires_at < ? ORDER BY lease_expires_at",
        (now,),
    )


def given_up(db: Database) -> list[dict[str, Any]]:
    """Blocked tasks whose block is a give-up (retries exhausted: the newest `blocked`/`gave_up` event of the task is
    `gave_up`), oldest give-up first, with the attempts and the last run's outcome that event recorded."""
    rows = db.rows(
        "SELECT t.id, t.title, e.payload FROM tasks t "
        "JOIN events e ON e.id = (SELECT max(id) FROM events WHERE task_id = t.id AND kind IN ('blocked', 'gave_up')) "
        "WHERE t.status = 'blocked' AND e.kind = 'gave_up' ORDER BY e.id"
    )
    out = []
    for r in rows:  # the payload is read here, not with json_extract: the same SQL runs on PostgreSQL
        try:
            payload = json.loads(r["payload"])
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        out.append({"id": r["id"], "title": r["title"], "attempts": payload.get("attempts"),
                    "last_outcome": payload.get("last_outcome")})
    return out


def board_created_at(db: Database) -> float | None:
    """When the board's schema was first created (the first migration), None on a board without that record."""
    value = db.value("SELECT min(applied_at) FROM schema_migrations")
    return None if value is None else float(value)


def run_id_high_water(db: Database) -> int:
    """The highest run id this board has handed out: the runs AUTOINCREMENT sequence (which restore raises past every
    run id the old board or the spool used), or the highest run row, whichever is larger."""
    return int(db.value(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0), "
        "coalesce((SELECT max(id) FROM runs), 0))"
    ))


def max_ids(db: Database) -> dict[str, int]:
    """Highest run and event ids (for keeping fencing tokens and event cursors monotonic across a restore)."""
    return {
        "runs": int(db.value("SELECT coalesce(max(id), 0) FROM runs")),
        "events": int(db.value("SELECT coalesce(max(id), 0) FROM events")),
    }


def raise_sequences(db: Database, minimum: dict[str, int]) -> None:
    """Make the next run/event ids larger than `minimum[...]`: a restored board never reuses a run id (fencing
    token) or an event id (reader cursor) handed out before the restore."""

    def tx() -> None:
        for table, floor in minimum.items():
            if table not in ("runs", "events") or floor <= 0:
                continue
            cur = db.value("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
            if cur is None:
                db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (table, floor))
            elif int(cur) < floor:
                db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (floor, table))

    db.write(tx)


#: highest id a table has used: its AUTOINCREMENT sequence (which a restore may have raised past every row) or its
#: highest row, whichever is larger. `{t}` is runs or events.
_HIGH_WATER_SQL = ("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = '{t}'), 0), "
                   "coalesce((SELECT max(id) FROM {t}), 0))")


def raise_file_sequences(path: Path, floor_for: Callable[[dict[str, int]], dict[str, int]]) -> dict[str, int]:
    """Raise the run/event id sequences of a board file that is not live yet (restore's staged copy).

    `floor_for` gets the file's own high-water marks and returns the floor to install. The write commits under
    synchronous=EXTRA and the WAL is folded back into the file before it closes, so the floor is in the file itself
    the moment it is renamed into place: no opener can ever see the file without it. Returns the floor installed.
    """
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_NOFOLLOW)
    try:
        conn.setbusytimeout(5000)
        conn.execute("PRAGMA synchronous=EXTRA")
        own = {t: int_value(conn, _HIGH_WATER_SQL.format(t=t)) for t in ("runs", "events")}
        floor = floor_for(own)
        with conn:  # one transaction
            for table, value in floor.items():
                if table not in ("runs", "events") or value <= 0:
                    continue
                conn.execute("INSERT INTO sqlite_sequence(name, seq) SELECT ?, 0 WHERE NOT EXISTS "
                             "(SELECT 1 FROM sqlite_sequence WHERE name = ?)", (table, table))
                conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ? AND seq < ?", (value, table, value))
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
        if busy:
            raise apsw.BusyError(f"could not fold the WAL of {path} back into it")
        return floor
    finally:
        conn.close()


def salvage_reports(
    conn: apsw.Connection, after_event_id: int
) -> tuple[list[dict[str, Any]], dict[str, int | None], str]:
    """Read completions/blocks logged after `after_event_id` from a (possibly damaged) board, best effort.

    Returns (reports, max ids (None where unreadable), note). Reading stops at the first corrupt page.
    """
    reports: list[dict[str, Any]] = []
    ids: dict[str, int | None] = {"runs": None, "events": None}
    note = "ok"
    try:
        for eid, task_id, run_id, kind, payload in conn.execute(
            "SELECT id, task_id, run_id, kind, payload FROM events WHERE id > ? AND kind IN "
            "('completed', 'blocked', 'review_requested') AND task_id IS NOT NULL ORDER BY id",
            (after_event_id,),
        ):
            try:
                data = json.loads(payload)
            except ValueError:
                data = {}
            if data.get("approved"):
                continue  # an approval is a person's act, not a worker report
            reports.append({"event_id": eid, "task_id": task_id, "run_id": run_id,
                            "kind": "block" if kind == "blocked" else "complete",
                            "summary": data.get("reason") if kind == "blocked" else data.get("summary"),
                            "forced": bool(data.get("forced"))})
    except apsw.Error as exc:
        note = f"stopped early: {exc}"
    for table in ("runs", "events"):
        try:
            ids[table] = int_value(conn, _HIGH_WATER_SQL.format(t=table))
        except apsw.Error as exc:
            note = f"{note}; max({table}.id) unreadable: {exc}"
    return reports, ids, note


def salvage_tasks(conn: apsw.Connection) -> tuple[list[dict[str, Any]], list[tuple[str, str, float]], str]:
    """Every task row and link of a (possibly damaged) board, best effort: (tasks, links, note)."""
    tasks: list[dict[str, Any]] = []
    links: list[tuple[str, str, float]] = []
    note = "ok"
    names = [c.strip() for c in TASK_COLUMNS.split(",")]
    try:
        for row in conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks"):
            tasks.append(dict(zip(names, row, strict=True)))
    except apsw.Error as exc:
        note = f"tasks: stopped early: {exc}"
    try:
        links = [(str(a), str(b), float(c)) for a, b, c in conn.execute(
            "SELECT parent_id, child_id, created_at FROM links")]
    except apsw.Error as exc:
        note = f"{note}; links: {exc}"
    return tasks, links, note


def insert_salvaged_tasks(db: Database, tasks: list[dict[str, Any]], links: list[tuple[str, str, float]],
                          now: float) -> list[str]:
    """Put back tasks a restored backup does not have (created after it), as the old board last had them, minus
    their runs: a running task comes back ready, with no run (its worker's report, spooled or salvaged, then
    applies as a late report). Links are restored where both ends exist. Returns the ids inserted."""
    def tx() -> list[str]:
        added = []
        for t in tasks:
            if db.value("SELECT 1 FROM tasks WHERE id = ?", (t["id"],)) is not None:
                continue
            row = dict(t)
            if row["status"] == "running":
                row["status"] = "ready"
            row.update(current_run_id=None, lease_expires_at=None, updated_at=now)
            if row.get("idempotency_key") and db.value(
                    "SELECT 1 FROM tasks WHERE idempotency_key = ? AND status != 'archived'",
                    (row["idempotency_key"],)):
                row["idempotency_key"] = None  # the restored board already has a task with that key
            insert_task(db, row)
            add_event(db, "salvaged", now, row["id"], None, status=row["status"], title=row["title"])
            added.append(row["id"])
        for parent, child, created in links:
            if child in added or parent in added:
                if db.value("SELECT count(*) FROM tasks WHERE id IN (?, ?)", (parent, child)) == 2:
                    db.execute("INSERT OR IGNORE INTO links(parent_id, child_id, created_at) VALUES (?, ?, ?)",
                               (parent, child, created))
        return added

    return db.write(tx)
