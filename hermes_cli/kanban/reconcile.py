"""`reconcile-completions`: decide what each spooled report should do to the board, and apply it safely.

One record per spooled report: `task_id`, `run_id`, `status` (the task's status now), `proposed_action`
(`apply` | `skip` | `conflict`) and `reason`. The rules, in order:

| situation                                                              | action   | reason                       |
|------------------------------------------------------------------------|----------|------------------------------|
| no such task on this board                                             | skip     | unknown_task                 |
| task archived                                                          | skip     | archived                     |
| task done                                                              | skip     | already_done                 |
| the run already ended with this very report (applied before)           | skip     | already_applied              |
| the run belongs to another task                                        | skip     | run_of_other_task            |
| task in review, or a `complete` for a review-gated task                | skip     | review_gate_blocked          |
| task running under this run                                            | apply    | current_run                  |
| task running under another run whose lease is live                     | conflict | active_claim_by_other_run    |
| task running under another run whose lease expired                     | conflict | expired_claim_by_other_run   |
| task waiting on parents (todo)                                         | conflict | waiting_on_parents           |
| `block` for a task already blocked                                     | skip     | already_blocked              |
| task ready or blocked; the run was closed since (reclaimed, crashed,   | apply    | late_report                  |
|   timed out) or is unknown (the board was restored from a backup)      |          |                              |
| a person's report (no run): task ready/blocked                         | apply    | manual_report                |
| a person's `--force` report while another run holds the task           | apply    | forced                       |

Why a late report applies: the worker finished the work and said so; the board only failed to record it. Applying
the completion is what the worker's `complete` would have done had the board been writable, and it beats running
the task again. The run that was closed (as reclaimed, crashed or timed out) keeps its outcome: the audit trail says
both what the board saw then and, in the `reconciled` event, what the worker reported.

Review-gated tasks are never moved by reconcile: it is an unattended bulk path and must not stand in for a person's
review. Their reports stay in the spool (reason review_gate_blocked) until a person settles the task (`approve`,
`complete --force`, `archive`); the next apply then sees `already_done`/`archived` and files the report away.

`apply` (DESIGN.md): a verified backup first, quick_check, then every applicable report in ONE transaction (each
re-decided inside it, with its state-change event plus a `reconciled` event), quick_check again, then applied files
move to `spool/applied/` and reports that can never apply (already_done, already_applied, archived, already_blocked)
to `spool/skipped/`. Conflicts and the rest stay pending. Re-running is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import doorbell, spool
from .errors import CorruptBoard, NotFound
from .models import RunOutcome, Task, TaskStatus
from .spool import SpooledReport
from .store import health as store_health
from .store import tasks as sql

if TYPE_CHECKING:
    from .board import Board

APPLY, SKIP, CONFLICT = "apply", "skip", "conflict"
#: skips that no later state of the board can turn into an apply: the report is filed under spool/skipped/
FINAL_SKIPS = frozenset({"already_done", "already_applied", "archived", "already_blocked"})


@dataclass(frozen=True, slots=True)
class Decision:
    report: SpooledReport
    status: str | None
    proposed_action: str
    reason: str
    #: what applying does to the task: done | review | blocked (None unless proposed_action is apply)
    effect: str | None = None

    def as_dict(self) -> dict[str, Any]:
        r = self.report
        return {
            "task_id": r.task_id, "run_id": r.run_id, "status": self.status, "proposed_action": self.proposed_action,
            "reason": self.reason, "kind": r.kind, "effect": self.effect, "summary": r.summary,
            "spooled_at": r.as_dict()["spooled_at"], "source": r.source, "file": str(r.path),
        }


@dataclass(slots=True)
class ApplyResult:
    decisions: list[Decision] = field(default_factory=list)
    applied: int = 0
    filed: int = 0  #: final skips moved to spool/skipped/
    backup: Path | None = None
    invalid: list[dict[str, str]] = field(default_factory=list)

    @property
    def conflicts(self) -> int:
        return sum(1 for d in self.decisions if d.proposed_action == CONFLICT)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "skipped": sum(1 for d in self.decisions if d.proposed_action == SKIP),
            "conflicts": self.conflicts,
            "filed_as_skipped": self.filed,
            "backup": None if self.backup is None else str(self.backup),
            "invalid_files": self.invalid,
            "records": [d.as_dict() for d in self.decisions],
        }


def decide(board: Board, report: SpooledReport, now: float) -> Decision:
    """What `report` should do to the board as it is now (reads only)."""
    db = board.db
    try:
        task = sql.get_task(db, report.task_id)
    except NotFound:
        return Decision(report, None, SKIP, "unknown_task")
    status = str(task.status)

    def d(action: str, reason: str, effect: str | None = None) -> Decision:
        return Decision(report, status, action, reason, effect)

    if task.status == TaskStatus.ARCHIVED:
        return d(SKIP, "archived")
    if task.status == TaskStatus.DONE:
        return d(SKIP, "already_done")
    run = None if report.run_id is None else sql.get_run(db, report.run_id)
    if run is not None and run.task_id != task.id:
        return d(SKIP, "run_of_other_task")
    landed = {"complete": (RunOutcome.COMPLETED, RunOutcome.REVIEW_REQUESTED), "block": (RunOutcome.BLOCKED,)}
    if run is not None and run.outcome in landed[report.kind]:
        return d(SKIP, "already_applied")
    effect = "blocked" if report.kind == "block" else "done"
    if task.status == TaskStatus.REVIEW or (report.kind == "complete" and task.review_required):
        return d(SKIP, "review_gate_blocked")
    if task.status == TaskStatus.RUNNING:
        if report.run_id is not None and task.current_run_id == report.run_id:
            return d(APPLY, "current_run", effect)
        if report.run_id is None and report.force:
            return d(APPLY, "forced", effect)
        live = task.lease_expires_at is not None and task.lease_expires_at >= now
        return d(CONFLICT, "active_claim_by_other_run" if live else "expired_claim_by_other_run")
    if task.status == TaskStatus.TODO:
        return d(CONFLICT, "waiting_on_parents")
    if report.kind == "block" and task.status == TaskStatus.BLOCKED:
        return d(SKIP, "already_blocked")
    # ready or blocked
    return d(APPLY, "manual_report" if report.run_id is None else "late_report", effect)


def plan(board: Board) -> tuple[list[Decision], list[dict[str, str]]]:
    """The dry run: one decision per pending report (oldest first), plus files that are not valid reports."""
    reports, invalid = spool.pending(board.paths)
    now = time.time()
    with board.db.read():
        return [decide(board, r, now) for r in reports], invalid


def _apply_one(board: Board, dec: Decision, now: float) -> None:
    """Make the change `dec` says, with its events. Runs inside the caller's write transaction."""
    db, r = board.db, dec.report
    task: Task = sql.get_task(db, r.task_id)
    closing = task.current_run_id if task.status == TaskStatus.RUNNING else None
    late = dec.reason in ("late_report", "manual_report")
    if r.kind == "complete":
        if closing is not None:
            sql.close_run(db, closing, str(RunOutcome.COMPLETED), now, r.summary)
        sql.update_task(db, task.id, now, status="done", summary=r.summary, completed_at=now, current_run_id=None,
                        lease_expires_at=None, retry_at=None)
        sql.add_event(db, "completed", now, task.id, r.run_id, summary=r.summary, title=task.title, reconciled=True,
                      forced=r.force or None)
        for child_id in sql.todo_children_ready_to_promote(db, task.id):
            sql.update_task(db, child_id, now, status="ready")
            sql.add_event(db, "promoted", now, child_id, status="ready", parent=task.id)
    else:
        if closing is not None:
            sql.close_run(db, closing, str(RunOutcome.BLOCKED), now, r.summary)
        sql.update_task(db, task.id, now, status="blocked", current_run_id=None, lease_expires_at=None,
                        retry_at=None)
        sql.add_event(db, "blocked", now, task.id, r.run_id, reason=r.summary, title=task.title, reconciled=True)
    sql.add_event(
        db, "reconciled", now, task.id, r.run_id, report=r.kind, reason=dec.reason, previous=str(task.status),
        late=late, file=r.path.name, source=r.source, spooled_at=r.spooled_at,
    )


def apply(board: Board, *, backup: bool = True, keep: int | None = None) -> ApplyResult:
    """Apply the spool (see the module docstring). Raises CorruptBoard when a quick_check fails (nothing applied
    if it failed before; the backup taken first restores the board if it failed after)."""
    decisions, invalid = plan(board)
    result = ApplyResult(decisions=decisions, invalid=invalid)
    if not decisions:
        return result
    todo = [d for d in decisions if d.proposed_action == APPLY]
    if todo:
        if backup:
            from . import backup as backups

            result.backup = backups.create(board, keep=keep, reason="reconcile").path
        problems = store_health.quick_check(board.db.conn)
        if problems:
            raise CorruptBoard(
                f"board database {board.paths.db} failed quick_check before reconcile ({problems[0]}); nothing "
                "applied (see: hermes kanban doctor)"
            )
        applied = _apply_all(board, [d.report for d in todo])
        problems = store_health.quick_check(board.db.conn)
        if problems:
            where = f"; restore {result.backup}" if result.backup else ""
            raise CorruptBoard(
                f"board database {board.paths.db} failed quick_check after reconcile ({problems[0]}){where} "
                "(see: hermes kanban doctor)"
            )
        # What really happened inside the transaction replaces the dry-run guesses.
        by_file = {d.report.path: d for d in applied}
        result.decisions = [by_file.get(d.report.path, d) for d in decisions]
    for d in result.decisions:
        if d.proposed_action == APPLY:
            spool.archive(board.paths, d.report, spool.APPLIED)
            result.applied += 1
        elif d.proposed_action == SKIP and d.reason in FINAL_SKIPS:
            if spool.archive(board.paths, d.report, spool.SKIPPED) is not None:
                result.filed += 1
    return result


def _apply_all(board: Board, reports: Sequence[SpooledReport]) -> list[Decision]:
    """One write transaction: re-decide each report against the current state, apply those still applicable."""

    def tx() -> list[Decision]:
        now = time.time()
        out: list[Decision] = []
        for r in reports:
            dec = decide(board, r, now)
            if dec.proposed_action == APPLY:
                _apply_one(board, dec, now)
            out.append(dec)
        board.db.after_commit(lambda: doorbell.ring(board.paths.notify_dir))
        return out

    return board.db.write(tx)
