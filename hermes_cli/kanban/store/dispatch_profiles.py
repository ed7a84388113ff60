"""SQL for a dispatcher that knows assignee profiles (`[profiles.<name>] command` in the board config): which ready
tasks it can start, when it must look again, and which ready tasks it cannot start because their assignee has no
command. A new module beside store/dispatch.py (which keeps the profile-less queries) so the engine work there is
left alone.

A task is dispatchable when it is ready, its retry (if any) is due, and it has a command: its own, else its
assignee's profile command, else (unassigned only) the board's default command. All of these are reads on the
tasks_claim_order index (status first); none of them writes.
"""

from __future__ import annotations

from collections.abc import Collection

from .connection import Database
from .tasks import CLAIM_ORDER


def _startable(profiles: Collection[str]) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause (after `status = 'ready'`) of a task that has a command, with its parameters (the default
    command flag comes first, as an integer)."""
    names = tuple(sorted(profiles))
    by_profile = f"assignee IN ({', '.join('?' * len(names))})" if names else "1 = 0"
    return f"(command IS NOT NULL OR (assignee IS NULL AND ? = 1) OR {by_profile})", names


def dispatchable(db: Database, now: float, *, any_default: bool, profiles: Collection[str], limit: int,
                 exclude: Collection[str] = ()) -> list[str]:
    """Ready tasks that can be started now, best first; none assigned to an assignee in `exclude` (at its limit)."""
    clause, names = _startable(profiles)
    full = tuple(sorted(exclude))
    not_full = f"AND (assignee IS NULL OR assignee NOT IN ({', '.join('?' * len(full))})) " if full else ""
    rows = db.rows(
        f"SELECT id FROM tasks WHERE status = 'ready' AND {clause} AND (retry_at IS NULL OR retry_at <= ?) "
        f"{not_full}ORDER BY {CLAIM_ORDER} LIMIT ?",
        (int(any_default), *names, now, *full, limit),
    )
    return [r["id"] for r in rows]


def running_by_assignee(db: Database, assignees: Collection[str]) -> dict[str, int]:
    """Tasks running on the whole board (every host's) per assignee, for these assignees (absent: none running):
    what a per-assignee limit counts."""
    names = tuple(sorted(assignees))
    if not names:
        return {}
    rows = db.rows(
        f"SELECT assignee, count(*) AS n FROM tasks WHERE status = 'running' AND assignee IN "
        f"({', '.join('?' * len(names))}) GROUP BY assignee",
        names,
    )
    return {r["assignee"]: int(r["n"]) for r in rows}


def next_retry_at(db: Database, *, any_default: bool, profiles: Collection[str], after: float) -> float | None:
    """The earliest retry, later than `after`, of a dispatchable task: when the dispatcher must look again."""
    clause, names = _startable(profiles)
    value = db.value(f"SELECT min(retry_at) FROM tasks WHERE status = 'ready' AND {clause} AND retry_at > ?",
                     (int(any_default), *names, after))
    return None if value is None else float(value)


def waiting_for_dispatcher(db: Database, *, any_default: bool, profiles: Collection[str]) -> int:
    """Ready tasks that only a dispatcher starts (due now or on a later retry)."""
    clause, names = _startable(profiles)
    return int(db.value(f"SELECT count(*) FROM tasks WHERE status = 'ready' AND {clause}",
                        (int(any_default), *names)) or 0)


def without_profile_command(db: Database, *, profiles: Collection[str], limit: int) -> list[tuple[str, str]]:
    """Ready tasks without a command of their own whose assignee has no profile command: (task id, assignee), best
    first. The dispatcher does not start them (pull workers may claim them)."""
    names = tuple(sorted(profiles))
    not_profile = f"AND assignee NOT IN ({', '.join('?' * len(names))})" if names else ""
    rows = db.rows(
        f"SELECT id, assignee FROM tasks WHERE status = 'ready' AND command IS NULL AND assignee IS NOT NULL "
        f"{not_profile} ORDER BY {CLAIM_ORDER} LIMIT ?",
        (*names, limit),
    )
    return [(r["id"], r["assignee"]) for r in rows]
