"""SQL the dispatcher reads on every wake: what can be started now, and when it next has to look again.

All of these are indexed reads (tasks_claim_order covers status + priority + age); none of them writes.
"""

from __future__ import annotations

from .connection import Database
from .tasks import CLAIM_ORDER

#: a task the dispatcher can start: ready, its retry (if any) due, and a command of its own unless the board has a
#: default command. Tasks with no command at all are left to pull workers (`hermes kanban claim`).
_DISPATCHABLE = "status = 'ready' AND (command IS NOT NULL OR ? = 1)"


def dispatchable(db: Database, now: float, *, any_command: bool, limit: int) -> list[str]:
    rows = db.rows(
        f"SELECT id FROM tasks WHERE {_DISPATCHABLE} AND (retry_at IS NULL OR retry_at <= ?) "
        f"ORDER BY {CLAIM_ORDER} LIMIT ?",
        (int(any_command), now, limit),
    )
    return [r["id"] for r in rows]


def waiting_for_dispatcher(db: Database, *, any_command: bool) -> int:
    """Ready tasks that only a dispatcher starts (due now or on a later retry); the other ready tasks have no command
    and wait for pull workers."""
    return int(db.value(f"SELECT count(*) FROM tasks WHERE {_DISPATCHABLE}", (int(any_command),)) or 0)


def next_retry_at(db: Database, *, any_command: bool, after: float) -> float | None:
    """The earliest retry, later than `after`, of a dispatchable task: when the dispatcher must look again."""
    value = db.value(
        f"SELECT min(retry_at) FROM tasks WHERE {_DISPATCHABLE} AND retry_at > ?", (int(any_command), after)
    )
    return None if value is None else float(value)


def earliest_lease_expiry(db: Database) -> float | None:
    """When the first running task's lease runs out (the next reclaim is due then)."""
    value = db.value("SELECT min(lease_expires_at) FROM tasks WHERE status = 'running'")
    return None if value is None else float(value)
