"""Counting queries for `Board.stats` and doctor's lease checks (read-only; callers hold a read snapshot)."""

from __future__ import annotations

from .connection import Database


def run_outcome_counts(db: Database) -> dict[str, int]:
    """Closed runs by outcome."""
    return {
        r["outcome"]: r["n"]
        for r in db.rows("SELECT outcome, count(*) AS n FROM runs WHERE outcome IS NOT NULL GROUP BY 1")
    }


def oldest_ready_created_at(db: Database) -> float | None:
    value = db.value("SELECT min(created_at) FROM tasks WHERE status = 'ready'")
    return None if value is None else float(value)


def done_since(db: Database, since: float) -> int:
    return int(db.value("SELECT count(*) FROM tasks WHERE status = 'done' AND completed_at >= ?", (since,)) or 0)


def open_run_count(db: Database) -> int:
    return int(db.value("SELECT count(*) FROM runs WHERE ended_at IS NULL") or 0)


def expired_lease_count(db: Database, now: float) -> int:
    return int(db.value("SELECT count(*) FROM tasks WHERE status = 'running' AND lease_expires_at < ?", (now,)) or 0)


def ready_count(db: Database) -> int:
    return int(db.value("SELECT count(*) FROM tasks WHERE status = 'ready'") or 0)
