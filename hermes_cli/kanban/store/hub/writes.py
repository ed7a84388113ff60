"""What a sync writes to the hub: the board's identity, its sync lease, and batches of events with task snapshots.

A batch is applied in ONE hub transaction that first locks the board's lease row and checks the lease token (a sync
whose lease was taken over writes nothing), then inserts the events (ON CONFLICT DO NOTHING: a resend changes
nothing), upserts the snapshots of the tasks they touch (only over an older snapshot), deletes the snapshots of tasks
deleted locally, advances the board's ack (never backwards) and refreshes the lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..tasks import TASK_COLUMNS
from .link import SCHEMA, HubLink, SyncLeaseLost

TASK_FIELDS = tuple(c.strip() for c in TASK_COLUMNS.split(","))
_NOW = "extract(epoch FROM clock_timestamp())"
#: the SQL type of each task column (as in a board's `tasks`): snapshots go in as one array per column
_FLOAT = {"max_runtime_s", "lease_expires_at", "retry_at", "created_at", "updated_at", "completed_at"}
_INT = {"priority", "review_required", "max_retries", "attempts", "current_run_id"}
_TYPES = {c: "float8" if c in _FLOAT else "bigint" if c in _INT else "text" for c in TASK_FIELDS}
_UPSERT_TASKS = (
    f"INSERT INTO {SCHEMA}.tasks(board_id, {', '.join(TASK_FIELDS)}, as_of_event, synced_at) "
    f"SELECT %b, u.*, %b, {_NOW} FROM unnest({', '.join(f'%b::{_TYPES[c]}[]' for c in TASK_FIELDS)}) AS u "
    f"ON CONFLICT (board_id, id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*TASK_FIELDS[1:], "as_of_event", "synced_at"))
    + f" WHERE {SCHEMA}.tasks.as_of_event <= excluded.as_of_event"
)


def _column(rows: list[dict[str, Any]], c: str) -> list[Any]:
    # One Python type per array (SQLite may hand back 3 for a float column): psycopg dumps a list by one type.
    cast = float if _TYPES[c] == "float8" else int if _TYPES[c] == "bigint" else None
    if cast is None:
        return [r[c] for r in rows]
    return [None if r[c] is None else cast(r[c]) for r in rows]


def _upsert_tasks(link: HubLink, board_id: str, tasks: list[dict[str, Any]], as_of: int) -> int:
    """Upsert the snapshots in one statement (binary arrays, one per column); returns the rows written."""
    return link.execute(_UPSERT_TASKS, (board_id, as_of, *(_column(tasks, c) for c in TASK_FIELDS)))


def register_board(link: HubLink, board_id: str, slug: str, host: str, writer: int) -> None:
    link.execute(
        f"INSERT INTO {SCHEMA}.boards(board_id, slug, host, writer_version, first_seen, last_seen) "
        f"VALUES (%s, %s, %s, %s, {_NOW}, {_NOW}) ON CONFLICT (board_id) DO UPDATE SET slug = excluded.slug, "
        "host = excluded.host, writer_version = excluded.writer_version, last_seen = excluded.last_seen",
        (board_id, slug, host, writer),
    )


def hub_id(link: HubLink) -> str:
    return str(link.value(f"SELECT value FROM {SCHEMA}.hub_meta WHERE key = 'hub_id'"))


def acked(link: HubLink, board_id: str) -> int:
    """The last event id the hub holds for this board (0: none yet): where a sync resumes."""
    return int(link.value(f"SELECT coalesce(max(last_event_id), 0) FROM {SCHEMA}.acks WHERE board_id = %s",
                          (board_id,)) or 0)


# -- the sync lease ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LeaseRow:
    token: int
    holder_host: str | None
    holder_pid: int | None
    holder_started: float | None
    acquired_at: float | None
    refreshed_at: float | None
    #: seconds since the last refresh, by the hub's clock (None when free)
    age: float | None

    @property
    def held(self) -> bool:
        return self.holder_host is not None

    def describe(self) -> str:
        age = "" if self.age is None else f", refreshed {self.age:.1f}s ago"
        return f"{self.holder_host} pid {self.holder_pid}{age}"

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.holder_host, "pid": self.holder_pid, "started": self.holder_started,
                "acquired_at": self.acquired_at, "refreshed_at": self.refreshed_at,
                "age_s": None if self.age is None else round(self.age, 3)}


def lock_lease(link: HubLink, board_id: str) -> LeaseRow:
    """The board's lease row, locked to the end of the transaction (created free on first use)."""
    link.execute(f"INSERT INTO {SCHEMA}.sync_leases(board_id) VALUES (%s) ON CONFLICT DO NOTHING", (board_id,))
    row = link.row(
        f"SELECT token, holder_host, holder_pid, holder_started, acquired_at, refreshed_at, "
        f"{_NOW} - refreshed_at AS age FROM {SCHEMA}.sync_leases WHERE board_id = %s FOR UPDATE", (board_id,))
    assert row is not None
    return LeaseRow(**row)


def take_lease(link: HubLink, board_id: str, host: str, pid: int, started: float | None) -> int:
    """Make us the holder (inside the transaction that locked the row); returns our new token."""
    return int(link.value(
        f"UPDATE {SCHEMA}.sync_leases SET token = token + 1, holder_host = %s, holder_pid = %s, holder_started = %s, "
        f"acquired_at = {_NOW}, refreshed_at = {_NOW} WHERE board_id = %s RETURNING token",
        (host, pid, started, board_id)))


def refresh_lease(link: HubLink, board_id: str, token: int) -> None:
    """The heartbeat; SyncLeaseLost when the lease is no longer ours."""
    if not link.execute(f"UPDATE {SCHEMA}.sync_leases SET refreshed_at = {_NOW} WHERE board_id = %s AND token = %s "
                        "AND holder_host IS NOT NULL", (board_id, token)):
        raise SyncLeaseLost(f"the sync lease of board {board_id} on {link.where} was taken over by another sync; "
                            "this one stops (nothing is lost: the other one continues from the hub's ack)")


def free_lease(link: HubLink, board_id: str, token: int | None = None) -> bool:
    """Release the lease (ours, when `token` is given). Returns whether a holder was removed."""
    sql = (f"UPDATE {SCHEMA}.sync_leases SET holder_host = NULL, holder_pid = NULL, holder_started = NULL, "
           "acquired_at = NULL, refreshed_at = NULL WHERE board_id = %s AND holder_host IS NOT NULL")
    params: tuple[Any, ...] = (board_id,)
    if token is not None:
        sql += " AND token = %s"
        params += (token,)
    return link.execute(sql, params) > 0


# -- batches -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Applied:
    inserted: int  #: events new to the hub (the rest were there already)
    tasks: int  #: task snapshots written
    deleted: int  #: task snapshots removed (deleted locally)
    acked: int  #: the board's ack after the batch


def apply_batch(link: HubLink, board_id: str, token: int, events: list[dict[str, Any]],
                tasks: list[dict[str, Any]], deleted: list[str], as_of: int) -> Applied:
    """Apply one batch in one hub transaction (see the module docstring)."""
    last = max((int(e["id"]) for e in events), default=0)
    with link.transaction():
        lease = link.value(f"SELECT token FROM {SCHEMA}.sync_leases WHERE board_id = %s AND holder_host IS NOT NULL "
                           "FOR UPDATE", (board_id,))
        if lease != token:
            raise SyncLeaseLost(f"the sync lease of board {board_id} on {link.where} was taken over by another "
                                "sync; this one stops (nothing is lost: the other continues from the hub's ack)")
        inserted = 0
        if events:
            inserted = link.execute(
                f"INSERT INTO {SCHEMA}.events(board_id, id, task_id, run_id, kind, payload, created_at, received_at) "
                f"SELECT %b, u.* , {_NOW} FROM unnest(%b::bigint[], %b::text[], %b::bigint[], %b::text[], "
                "%b::text[], %b::float8[]) AS u ON CONFLICT (board_id, id) DO NOTHING",
                (board_id, [int(e["id"]) for e in events], [e["task_id"] for e in events],
                 [e["run_id"] for e in events], [e["kind"] for e in events], [e["payload"] for e in events],
                 [float(e["created_at"]) for e in events]))
        if tasks:
            _upsert_tasks(link, board_id, tasks, as_of)
        removed = 0
        if deleted:
            removed = link.execute(f"DELETE FROM {SCHEMA}.tasks WHERE board_id = %s AND id = ANY(%s) "
                                   "AND as_of_event <= %s", (board_id, deleted, as_of))
        ack = int(link.value(
            f"INSERT INTO {SCHEMA}.acks(board_id, last_event_id, events, updated_at) VALUES (%s, %s, %s, {_NOW}) "
            f"ON CONFLICT (board_id) DO UPDATE SET last_event_id = greatest({SCHEMA}.acks.last_event_id, "
            f"excluded.last_event_id), events = {SCHEMA}.acks.events + excluded.events, "
            "updated_at = excluded.updated_at RETURNING last_event_id", (board_id, last, inserted)))
        link.execute(f"UPDATE {SCHEMA}.sync_leases SET refreshed_at = {_NOW} WHERE board_id = %s", (board_id,))
        link.execute(f"UPDATE {SCHEMA}.boards SET last_seen = {_NOW} WHERE board_id = %s", (board_id,))
    return Applied(inserted, len(tasks), removed, ack)


def upsert_tasks(link: HubLink, board_id: str, token: int, tasks: list[dict[str, Any]], as_of: int) -> None:
    """Snapshots alone (a board's first sync sends every task: some may have no event left after a gc)."""
    with link.transaction():
        lease = link.value(f"SELECT token FROM {SCHEMA}.sync_leases WHERE board_id = %s AND holder_host IS NOT NULL "
                           "FOR UPDATE", (board_id,))
        if lease != token:
            raise SyncLeaseLost(f"the sync lease of board {board_id} on {link.where} was taken over by another sync")
        _upsert_tasks(link, board_id, tasks, as_of)
