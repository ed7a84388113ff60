"""`diagnostics`: the rules that say which tasks need a person, how badly, and the next command to run.

Pure functions over what the board read (a task, its runs, parents and block/unblock history); the board gathers
the data in one read snapshot (Board.diagnostics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.models import Event, Run, RunOutcome, Task, TaskStatus, iso

#: in increasing order; `--severity S` keeps S and above
SEVERITIES = ("warning", "error", "critical")
#: a task blocked this many times after being unblocked is looping
BLOCK_LOOP = 2
#: this many failed runs in a row (crashed, timed out, reclaimed) is a crash loop
CRASH_LOOP = 2
FAILED = (RunOutcome.CRASHED, RunOutcome.TIMED_OUT, RunOutcome.RECLAIMED)


@dataclass(frozen=True, slots=True)
class Facts:
    task: Task
    runs: Sequence[Run]
    parents: Sequence[Task]
    #: the task's blocked/unblocked/gave_up events, oldest first
    history: Sequence[Event]


def _d(t: Task, kind: str, severity: str, message: str, next_command: str, **data: Any) -> dict[str, Any]:
    return {"task_id": t.id, "title": t.title, "status": str(t.status), "assignee": t.assignee, "kind": kind,
            "severity": severity, "message": message, "next": next_command, "data": data}


def diagnose_task(f: Facts, now: float, ready_wait_s: float) -> list[dict[str, Any]]:
    t = f.task
    out: list[dict[str, Any]] = []
    if t.status == TaskStatus.RUNNING and t.lease_expires_at is not None and t.lease_expires_at < now:
        out.append(_d(t, "stranded", "error",
                      f"run {t.current_run_id}'s lease expired {int(now - t.lease_expires_at)}s ago: its worker "
                      "stopped heartbeating and no dispatcher has reclaimed it",
                      f"hermes kanban reclaim {t.id}", run_id=t.current_run_id,
                      lease_expires_at=iso(t.lease_expires_at)))
    if t.status == TaskStatus.READY and now - t.updated_at > ready_wait_s and (t.retry_at is None
                                                                                or t.retry_at <= now):
        out.append(_d(t, "stuck_ready", "warning",
                      f"ready for {int(now - t.updated_at)}s and nothing has claimed it (is a dispatcher running?)",
                      "hermes kanban dispatch", waiting_s=int(now - t.updated_at)))
    if t.status == TaskStatus.BLOCKED:
        gave_up = bool(f.history) and f.history[-1].kind == "gave_up"
        if gave_up:
            out.append(_d(t, "gave_up", "error",
                          f"gave up after {t.attempts} attempt(s); read why before retrying",
                          f"hermes kanban log {t.id} --tail 4000", attempts=t.attempts))
        else:
            out.append(_d(t, "blocked", "warning",
                          "blocked" + (f" ({t.block_kind})" if t.block_kind else "") + ": waiting for a person",
                          f"hermes kanban unblock {t.id}", block_kind=t.block_kind))
    blocks_after_unblock = 0
    seen_unblock = False
    for e in f.history:
        if e.kind == "unblocked":
            seen_unblock = True
        elif e.kind == "blocked" and seen_unblock:
            blocks_after_unblock += 1
    if blocks_after_unblock >= BLOCK_LOOP:
        out.append(_d(t, "block_loop", "error",
                      f"blocked again {blocks_after_unblock} times after being unblocked: unblocking does not fix it",
                      f"hermes kanban show {t.id}", reblocks=blocks_after_unblock))
    streak = 0
    for r in reversed(f.runs):
        if r.outcome in FAILED:
            streak += 1
        elif r.outcome is not None:
            break
    if streak >= CRASH_LOOP and t.status not in (TaskStatus.DONE, TaskStatus.ARCHIVED):
        out.append(_d(t, "crash_loop", "critical" if t.status == TaskStatus.BLOCKED else "error",
                      f"the last {streak} runs failed ({', '.join(str(r.outcome) for r in f.runs[-streak:])})",
                      f"hermes kanban runs {t.id}", failed_runs=streak))
    if t.status == TaskStatus.TODO:
        for p in f.parents:
            if p.status == TaskStatus.BLOCKED:
                out.append(_d(t, "parent_blocked", "warning", f"waiting on parent {p.id}, which is blocked",
                              f"hermes kanban show {p.id}", parent=p.id))
    if t.status == TaskStatus.TRIAGE:
        out.append(_d(t, "triage", "warning", "parked in triage: nothing runs it until it is promoted",
                      f"hermes kanban promote {t.id}"))
    return out


def diagnose(facts: Sequence[Facts], now: float, ready_wait_s: float) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for f in facts:
        found.extend(diagnose_task(f, now, ready_wait_s))
    found.sort(key=lambda d: (-SEVERITIES.index(d["severity"]), d["task_id"]))
    return found
