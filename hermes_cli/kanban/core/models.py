"""Values of the domain: frozen dataclasses built from store rows, and the status enums.

Times are stored as UTC epoch seconds (REAL) and exposed as aware `datetime`s; `as_dict()` renders them ISO 8601 UTC.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime


class TaskStatus(StrEnum):
    TRIAGE = "triage"  #: parked for a person to specify (`create --triage`); `promote` moves it on
    TODO = "todo"  #: waiting on unfinished parents
    READY = "ready"  #: can be claimed
    RUNNING = "running"  #: claimed by an open run holding a lease
    REVIEW = "review"  #: finished by a worker, waiting for `approve` or `request-changes`
    BLOCKED = "blocked"  #: needs a human (explicit block, or retries exhausted)
    DONE = "done"  #: finished
    ARCHIVED = "archived"  #: put away; satisfies children like done


class RunOutcome(StrEnum):
    COMPLETED = "completed"  #: the worker reported completion (or exited 0 without a report)
    BLOCKED = "blocked"  #: the worker or a human blocked the task
    CRASHED = "crashed"  #: the worker exited non-zero without a report
    TIMED_OUT = "timed_out"  #: killed after max_runtime
    RECLAIMED = "reclaimed"  #: the lease expired (or the task was archived) and the run was closed
    GAVE_UP = "gave_up"  #: the last allowed attempt failed; the task is blocked
    REVIEW_REQUESTED = "review_requested"  #: the worker finished a review-gated task


#: every kind of event the board writes (`events --kinds` and subscriptions accept these and no others; a test
#: scans the code for kinds written and checks they are all here)
EVENT_KINDS: tuple[str, ...] = (
    "created", "commented", "linked", "unlinked", "status", "promoted", "claimed", "spawned", "completed",
    "review_requested", "changes_requested", "blocked", "unblocked", "archived", "reclaimed", "crashed", "timed_out",
    "gave_up", "reconciled", "salvaged", "subscribed", "unsubscribed", "dispatcher_started", "dispatcher_stopped",
    "dispatcher_lock_broken", "assigned", "dependency_wait", "promoted_manual", "edited", "deleted", "heartbeat",
    "board_updated", "skipped_nonspawnable", "model_override_set", "workspace_removed", "workspace_kept",
)

#: statuses in board order, for columns and stats
STATUS_ORDER: tuple[TaskStatus, ...] = tuple(TaskStatus)
#: statuses that satisfy a child's dependency on its parent
PARENT_SATISFIED = (TaskStatus.DONE, TaskStatus.ARCHIVED)


def utc(ts: float | None) -> datetime | None:
    from datetime import UTC, datetime  # here: the hot worker commands never need it (issue 11: start-up)

    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with millisecond precision and a Z, or None: what
    `datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")` gives (microseconds rounded half to even as
    fromtimestamp rounds them, then cut to milliseconds), without importing datetime (2-4 ms of every hot command's
    start-up; tests/store/test_iso_times.py compares the two)."""
    if ts is None:
        return None
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        us -= 1_000_000
        whole += 1
    elif us < 0:
        us += 1_000_000
        whole -= 1
    t = time.gmtime(int(whole))
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            f".{us // 1000:03d}Z")


#: field names of each value class, for from_row (claim and complete build one or two values per transaction)
_FIELD_NAMES: dict[type, frozenset[str]] = {}


class Row:
    """from_row/as_dict shared by the values. Fields ending in `_at` are epoch floats rendered as ISO strings."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]):  # type: ignore[no-untyped-def]
        names = _FIELD_NAMES.get(cls)
        if names is None:  # dataclasses.fields() walks the class each call: once per class is enough
            names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
        return cls(**{k: v for k, v in row.items() if k in names})

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name.endswith("_at"):
                value = iso(value)
            elif isinstance(value, StrEnum):
                value = str(value)
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class Task(Row):
    id: str
    title: str
    body: str
    status: TaskStatus
    priority: int
    tenant: str | None
    command: str | None
    idempotency_key: str | None
    review_required: bool
    max_runtime_s: float | None
    max_retries: int
    attempts: int
    current_run_id: int | None
    lease_expires_at: float | None
    retry_at: float | None
    summary: str | None
    created_at: float
    updated_at: float
    completed_at: float | None
    assignee: str | None = None  #: the profile that works on it (hermes-agent's `--assignee`)
    created_by: str | None = None
    skills: tuple[str, ...] = ()  #: stored for the worker (`--skill`, repeatable); not interpreted here
    result: str | None = None  #: what the task produced (`complete --result`, `edit --result`)
    block_kind: str | None = None  #: why it is blocked: dependency, needs_input, capability or transient
    workspace: str | None = None  #: where its worker runs (scratch, worktree, dir:PATH); None = board default
    branch: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", TaskStatus(self.status))
        object.__setattr__(self, "review_required", bool(self.review_required))
        if isinstance(self.skills, str):
            object.__setattr__(self, "skills", tuple(json.loads(self.skills)))
        elif self.skills is None:
            object.__setattr__(self, "skills", ())

    def as_dict(self) -> dict[str, Any]:
        out = Row.as_dict(self)
        out["skills"] = list(self.skills)
        return out


@dataclass(frozen=True, slots=True)
class Run(Row):
    id: int
    task_id: str
    worker: str | None
    host: str | None
    pid: int | None
    pid_create_time: float | None
    started_at: float
    heartbeat_at: float | None
    lease_expires_at: float
    ended_at: float | None
    outcome: RunOutcome | None
    summary: str | None
    exit_code: int | None
    result: str | None = None  #: `complete --result`, handed to the task's children
    metadata: dict[str, Any] | None = None  #: `complete --metadata` (a JSON object), handed to the children

    def __post_init__(self) -> None:
        if self.outcome is not None:
            object.__setattr__(self, "outcome", RunOutcome(self.outcome))
        if isinstance(self.metadata, str):
            object.__setattr__(self, "metadata", json.loads(self.metadata))

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


@dataclass(frozen=True, slots=True)
class Claim(Row):
    """What a claim hands a worker: the task, its run id (the fencing token) and when the lease runs out."""

    task_id: str
    run_id: int
    lease_expires_at: float
    attempt: int


@dataclass(frozen=True, slots=True)
class Comment(Row):
    id: int
    task_id: str
    author: str | None
    body: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Event(Row):
    id: int
    task_id: str | None
    run_id: int | None
    kind: str
    payload: dict[str, Any]
    created_at: float

    def __post_init__(self) -> None:
        if isinstance(self.payload, str):
            object.__setattr__(self, "payload", json.loads(self.payload))


@dataclass(frozen=True, slots=True)
class TaskDetail:
    """Everything `show` displays about one task."""

    task: Task
    parents: tuple[Task, ...]
    children: tuple[Task, ...]
    runs: tuple[Run, ...]
    comments: tuple[Comment, ...]
    events: tuple[Event, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.task.as_dict(),
            "parents": [_brief(t) for t in self.parents],
            "children": [_brief(t) for t in self.children],
            "runs": [r.as_dict() for r in self.runs],
            "comments": [c.as_dict() for c in self.comments],
            "events": [e.as_dict() for e in self.events],
        }


def _brief(task: Task) -> dict[str, Any]:
    return {"id": task.id, "title": task.title, "status": str(task.status)}
