"""SQL for notification readers: persistent subscriptions and cursor reads of the event log.

A subscription is a named, persistent cursor on `events.id` with an optional list of kinds. Cursors only move
forward (`max(cursor, ?)`), so a slow reader acknowledging late can never rewind a faster one sharing the name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..core.models import Event
from .connection import Database

SUB_COLUMNS = "name, cursor, kinds, created_at, updated_at"


@contextmanager
def _snapshot(db: Database) -> Iterator[None]:
    """A read snapshot, or the caller's transaction if one is open already (Database.read does not nest)."""
    if db.in_transaction:
        yield
        return
    with db.read():
        yield


def _kinds_sql(kinds: Sequence[str] | None) -> str | None:
    return None if not kinds else json.dumps(list(kinds), separators=(",", ":"))


def get(db: Database, name: str) -> dict[str, Any] | None:
    return db.row(f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE name = ?", (name,))


def all_with_pending(db: Database) -> list[dict[str, Any]]:
    """Every subscription with `pending`: how many events after its cursor match its kinds."""
    out: list[dict[str, Any]] = []
    for row in db.rows(f"SELECT {SUB_COLUMNS} FROM subscriptions ORDER BY name"):
        kinds = decode_kinds(row["kinds"])
        row["pending"] = count_after(db, row["cursor"], kinds)
        out.append(row)
    return out


def decode_kinds(raw: str | None) -> tuple[str, ...] | None:
    if not raw:
        return None
    return tuple(json.loads(raw))


def insert(db: Database, name: str, cursor: int, kinds: Sequence[str] | None, now: float) -> None:
    db.execute(
        "INSERT INTO subscriptions(name, cursor, kinds, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        (name, cursor, _kinds_sql(kinds), now, now),
    )


def set_kinds(db: Database, name: str, kinds: Sequence[str] | None, now: float) -> None:
    db.execute("UPDATE subscriptions SET kinds = ?, updated_at = ? WHERE name = ?", (_kinds_sql(kinds), now, name))


def advance(db: Database, name: str, cursor: int, now: float) -> int | None:
    """Move the cursor forward to `cursor` (never back). Returns the stored cursor, or None if the name is gone."""
    db.execute(
        "UPDATE subscriptions SET cursor = CASE WHEN cursor > ? THEN cursor ELSE ? END, updated_at = ? WHERE name = ?",
        (cursor, cursor, now, name),
    )
    value = db.value("SELECT cursor FROM subscriptions WHERE name = ?", (name,))
    return None if value is None else int(value)


def delete(db: Database, name: str) -> bool:
    if db.value("SELECT 1 FROM subscriptions WHERE name = ?", (name,)) is None:
        return False
    db.execute("DELETE FROM subscriptions WHERE name = ?", (name,))
    return True


def count_after(db: Database, cursor: int, kinds: Sequence[str] | None) -> int:
    if kinds:
        return int(
            db.value(
                f"SELECT count(*) FROM events WHERE id > ? AND kind IN ({','.join('?' * len(kinds))})",
                (cursor, *kinds),
            )
        )
    return int(db.value("SELECT count(*) FROM events WHERE id > ?", (cursor,)))


def read_after(
    db: Database, cursor: int, kinds: Sequence[str] | None, limit: int
) -> tuple[list[Event], int, bool]:
    """One batch for a reader: (events after `cursor` matching `kinds`, the new cursor, whether more remain).

    Read in one snapshot, so with a kinds filter the cursor can safely jump to the newest id scanned (not just the
    newest match): nothing can commit between the two SELECTs of the snapshot.
    """
    with _snapshot(db):
        where: list[str] = ["id > ?"]
        params: list[object] = [cursor]
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        rows = db.rows(
            f"SELECT id, task_id, run_id, kind, payload, created_at FROM events WHERE {' AND '.join(where)} "
            "ORDER BY id LIMIT ?",
            (*params, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        if more:
            new_cursor = int(rows[-1]["id"])
        else:
            top = int(db.value("SELECT coalesce(max(id), 0) FROM events"))
            new_cursor = max(cursor, top)
    return [Event.from_row(r) for r in rows], new_cursor, more


def summary_between(
    db: Database, after: int, upto: int, kinds: Sequence[str], recent: int
) -> tuple[dict[str, int], list[Event]]:
    """Counts per kind of the events in (after, upto] among `kinds`, and the newest `recent` of them."""
    marks = ",".join("?" * len(kinds))
    with _snapshot(db):
        counts = {
            r["kind"]: int(r["n"])
            for r in db.rows(
                f"SELECT kind, count(*) AS n FROM events WHERE id > ? AND id <= ? AND kind IN ({marks}) GROUP BY kind",
                (after, upto, *kinds),
            )
        }
        rows = db.rows(
            f"SELECT id, task_id, run_id, kind, payload, created_at FROM events "
            f"WHERE id > ? AND id <= ? AND kind IN ({marks}) ORDER BY id DESC LIMIT ?",
            (after, upto, *kinds, recent),
        )
    return counts, [Event.from_row(r) for r in reversed(rows)]
