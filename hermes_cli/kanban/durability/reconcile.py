"""`reconcile-completions`: decide what each spooled report should do to the board, and apply it safely.

One record per spooled report: `task_id`, `run_id`, `status` (the task's status now), `proposed_action`
(`apply` | `skip` | `conflict`), `reason`, and `detail` (a sentence, for conflicts). The rules, in order:

| situation                                                              | action   | reason                       |
|------------------------------------------------------------------------|----------|------------------------------|
| no such task on this board                                             | skip     | unknown_task                 |
| task archived                                                          | skip     | archived                     |
| task done                                                              | skip     | already_done                 |
| the run belongs to another task                                        | skip     | run_of_other_task            |
| the run already ended with this very report (applied before)           | skip     | already_applied              |
| task in review (waiting for a person)                                  | skip     | review_gate_blocked          |
| task running under this run                                            | apply    | current_run                  |
| a person's `--force` report while another run holds the task           | apply    | forced                       |
| task running under another run whose lease is live                     | conflict | active_claim_by_other_run    |
| task running under another run whose lease expired                     | conflict | expired_claim_by_other_run   |
| task waiting on parents (todo)                                         | conflict | waiting_on_parents           |
| `block` for a task already blocked                                     | skip     | already_blocked              |
| a person's report (no run): task ready/blocked                         | apply    | manual_report                |
| task ready/blocked, the run id was never handed out by this board      | conflict | unknown_run                  |
| task ready/blocked, and the run was closed by another action (a        | conflict | closed_by_other_action       |
|   person's block/complete/archive...), or a later run exists, or the   |          |                              |
|   task was changed (blocked, unblocked, ...) after the run ended       |          |                              |
| task ready/blocked, the run was closed by the board's own failure      | apply    | late_report                  |
|   detection (reclaimed, crashed, timed out) and nothing happened to    |          |                              |
|   the task since; or the run is unknown after a restore from a backup  |          |                              |

What applying does is what the command would have done on a writable board (the same Board internals): a
completion makes the task `done` (children promoted), or `review` when the task is review-gated; a block makes it
`blocked`. A running task's current run is closed with the report.

Why a late report applies: the worker finished the work and said so; the board only failed to record it, and meanwhile
its own failure detection closed the run (lease expired, exit without a report). Applying the completion beats running
the task again. But only then: a run that a person closed (`block --force`, `complete --force`, ...), or a task a
person changed after the run ended, or a task that another run has picked up since, has moved on, and a stale report
must not undo that. Those are conflicts for a person to settle; the run that was closed keeps its outcome, and the
`reconciled` event records the report when it applies. "Changed since" compares the task's events after the last
event of the run (for a run unknown after a restore: after the report was spooled); comments, spawns, links and
promotions do not count.

Review gate: a task in review waits for a person (`approve`, `request-changes`); reconcile never settles it, the report
stays in the spool (review_gate_blocked) until the task moves on. A completion of a review-gated task that is still
running under the report's run puts it in review, as `complete` would have.

`apply` (DESIGN.md): a verified backup first, quick_check, then every applicable report in ONE transaction (each
re-decided inside it, with its state-change event plus a `reconciled` event), quick_check again, then applied files
move to `spool/applied/` and reports that can never apply (already_done, already_applied, archived, already_blocked)
to `spool/skipped/`. Conflicts and the rest stay pending. Files that are not valid reports (the spool reader's checks)
move to `spool/invalid/` with the reason beside them. One report the board refuses while applying (apply_failed) is
left out and the transaction re-run without it, so it never holds up the others. Re-running is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import CorruptBoard, HermesError, NotFound, StorageError
from ..core.models import Run, RunOutcome, Task, TaskStatus, iso
from ..store import engine
from ..store import health as store_health
from ..store import tasks as sql
from ..store.connection import Database
from . import backup as backups
from . import spool
from .spool import SpooledReport

if TYPE_CHECKING:
    from ..domain.board import Board

APPLY, SKIP, CONFLICT = "apply", "skip", "conflict"
#: skips that no later state of the board can turn into an apply: the report is filed under spool/skipped/
FINAL_SKIPS = frozenset({"already_done", "already_applied", "archived", "already_blocked"})
#: run outcomes set by the board's own failure detection: only a report of such a run may apply late
CLOSED_BY_THE_BOARD = frozenset({RunOutcome.RECLAIMED, RunOutcome.CRASHED, RunOutcome.TIMED_OUT})
#: events that change neither what a task is nor who works on it: they never stand in the way of a late report
QUIET_EVENTS = frozenset({"commented", "spawned", "promoted", "linked", "unlinked", "salvaged"})


@dataclass(frozen=True, slots=True)
class Decision:
    report: SpooledReport
    status: str | None
    proposed_action: str
    reason: str
    #: what applying does to the task: done | review | blocked (None unless proposed_action is apply)
    effect: str | None = None
    #: one sentence on why (conflicts), for the operator
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        r = self.report
        return {
            "task_id": r.task_id, "run_id": r.run_id, "status": self.status, "proposed_action": self.proposed_action,
            "reason": self.reason, "kind": r.kind, "effect": self.effect, "summary": r.summary,
            "spooled_at": r.as_dict()["spooled_at"], "source": r.source, "file": str(r.path), "detail": self.detail,
        }


def invalid_record(bad: dict[str, str]) -> dict[str, Any]:
    """A spool file that is not a valid report, as a record beside the decisions (it never applies)."""
    return {
        "task_id": None, "run_id": None, "status": None, "proposed_action": SKIP, "reason": "invalid_report",
        "kind": None, "effect": None, "summary": None, "spooled_at": None, "source": None, "file": bad["file"],
        "detail": bad["problem"], "moved_to": bad.get("moved_to"),
    }


@dataclass(slots=True)
class ApplyResult:
    decisions: list[Decision] = field(default_factory=list)
    applied: int = 0
    filed: int = 0  #: final skips moved to spool/skipped/
    backup: Path | None = None
    #: files that are not valid reports: {"file", "problem", "moved_to"} (moved to spool/invalid/)
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
            "records": [d.as_dict() for d in self.decisions] + [invalid_record(b) for b in self.invalid],
        }


def decide(board: Board, report: SpooledReport, now: float) -> Decision:
    """What `report` should do to the board as it is now (reads only)."""
    db = board.db
    try:
        task = sql.get_task(db, report.task_id)
    except NotFound:
        return Decision(report, None, SKIP, "unknown_task")
    status = str(task.status)

    def d(action: str, reason: str, effect: str | None = None, detail: str | None = None) -> Decision:
        return Decision(report, status, action, reason, effect, detail)

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
    if task.status == TaskStatus.REVIEW:
        return d(SKIP, "review_gate_blocked")
    effect = "blocked" if report.kind == "block" else "review" if task.review_required else "done"
    if task.status == TaskStatus.RUNNING:
        if report.run_id is not None and task.current_run_id == report.run_id:
            return d(APPLY, "current_run", effect)
        if report.run_id is None and report.force:
            return d(APPLY, "forced", effect)
        live = task.lease_expires_at is not None and task.lease_expires_at >= now
        return d(CONFLICT, "active_claim_by_other_run" if live else "expired_claim_by_other_run",
                 detail=f"run {task.current_run_id} holds the task")
    if task.status == TaskStatus.TODO:
        return d(CONFLICT, "waiting_on_parents")
    if report.kind == "block" and task.status == TaskStatus.BLOCKED:
        return d(SKIP, "already_blocked")
    # ready or blocked
    if report.run_id is None:
        return d(APPLY, "manual_report", effect)
    if run is None and report.run_id > store_health.run_id_high_water(db):
        return d(CONFLICT, "unknown_run", detail=f"run {report.run_id} was never handed out by this board")
    refusal = _moved_on(db, task, report, run)
    if refusal is not None:
        return d(CONFLICT, "closed_by_other_action", detail=refusal)
    return d(APPLY, "late_report", effect)


def _moved_on(db: Database, task: Task, report: SpooledReport, run: Run | None) -> str | None:
    """Why the task has moved on since the report's run ended (so the late report must not apply), or None."""
    rid = report.run_id
    assert rid is not None
    if run is not None and run.outcome not in CLOSED_BY_THE_BOARD:
        how = f"ended as {run.outcome}" if run.outcome is not None else "is still open"
        return f"run {rid} {how}, not by the board's failure detection"
    later = [r.id for r in sql.runs_for(db, task.id) if r.id > rid]
    if later:
        return f"run {later[-1]} was started on the task after run {rid}"
    events = sql.events_after(db, 0, task_id=task.id)
    if run is not None:
        # The run's last event is the one that closed it (reclaimed/crashed/timed_out, or gave_up right after).
        mark = max((e.id for e in events if e.run_id == rid), default=0)
        since = [e for e in events if e.id > mark and e.kind not in QUIET_EVENTS]
    else:
        # A run unknown after a restore: anything done to the task after the worker reported.
        since = [e for e in events if e.created_at > report.spooled_at and e.kind not in QUIET_EVENTS]
    if since:
        e = since[-1]
        return f"task {task.id} was changed after run {rid} ended ({e.kind} at {iso(e.created_at)}, event {e.id})"
    return None


def _decide_or_refuse(board: Board, report: SpooledReport, now: float) -> Decision:
    """decide(), with a report the board cannot even look up (a value it refuses) as one conflict, not a failure of
    the whole reconcile. Storage errors propagate: the board is not healthy, nothing should be applied."""
    try:
        return decide(board, report, now)
    except StorageError:
        raise
    except HermesError as exc:
        return Decision(report, None, CONFLICT, "apply_failed", detail=exc.message)


def plan(board: Board) -> tuple[list[Decision], list[dict[str, str]]]:
    """The dry run: one decision per pending report (oldest first), plus files that are not valid reports."""
    reports, invalid = spool.pending(board.paths)
    now = board.db.clock()  # the board's clock (the server's on PostgreSQL): leases are measured by it
    with board.db.read():
        return [_decide_or_refuse(board, r, now) for r in reports], invalid


def _apply_one(board: Board, dec: Decision, now: float) -> None:
    """Make the change `dec` says, with its events: what `complete`/`block` do (Board.apply_report). Runs inside the
    caller's write transaction."""
    db, r = board.db, dec.report
    task: Task = sql.get_task(db, r.task_id)
    board.apply_report(task, r.kind, now, r.summary, run_id=r.run_id, forced=r.force, extra=r.extra or {})
    sql.add_event(
        db, "reconciled", now, task.id, r.run_id, report=r.kind, reason=dec.reason, previous=str(task.status),
        late=dec.reason in ("late_report", "manual_report"), file=r.path.name, source=r.source,
        spooled_at=iso(r.spooled_at),
    )


def apply(board: Board, *, backup: bool = True, keep: int | None = None) -> ApplyResult:
    """Apply the spool (see the module docstring). Raises CorruptBoard when a quick_check fails (nothing applied
    if it failed before; the backup taken first restores the board if it failed after)."""
    decisions, invalid = plan(board)
    result = ApplyResult(decisions=decisions)
    todo = [d for d in decisions if d.proposed_action == APPLY]
    if todo:
        if backup:
            result.backup = backups.create(board, keep=keep, reason="reconcile").path
        problems = _check(board)
        if problems:
            raise CorruptBoard(
                f"board database {board.paths.db} failed quick_check before reconcile ({problems[0]}); nothing "
                "applied (see: hermes kanban doctor)"
            )
        applied = _apply_all(board, [d.report for d in todo])
        problems = _check(board)
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
    for bad in invalid:
        moved = spool.set_aside(board.paths, bad["file"], bad["problem"])
        if moved is not None:  # else another reconcile moved it first (and reports it)
            result.invalid.append({**bad, "moved_to": str(moved)})
    return result


def _check(board: Board) -> list[str]:
    """quick_check of a SQLite board file; nothing for a PostgreSQL board (the server keeps its pages whole: doctor
    runs amcheck there)."""
    if engine.is_postgres(board.db):
        return []
    return store_health.quick_check(board.db.conn)


class _ReportFailed(Exception):
    """Raised inside the apply transaction to roll it back and re-run it without one report."""

    def __init__(self, decision: Decision, error: HermesError) -> None:
        super().__init__(error.message)
        self.decision, self.error = decision, error


def _apply_all(board: Board, reports: Sequence[SpooledReport]) -> list[Decision]:
    """One write transaction: re-decide each report against the current state, apply those still applicable.

    A report the board refuses while applying it (a domain error, not storage) rolls the transaction back; it is
    recorded as a conflict (apply_failed) and the transaction re-runs without it, so one bad report never holds up
    the others. Storage errors propagate: nothing is applied on an unhealthy board.
    """
    pending = list(reports)
    failed: list[Decision] = []

    def tx() -> list[Decision]:
        now = board.db.clock()  # the board's clock (the server's on PostgreSQL), as every write uses
        out: list[Decision] = []
        for r in pending:
            dec = _decide_or_refuse(board, r, now)
            if dec.proposed_action == APPLY:
                try:
                    _apply_one(board, dec, now)
                except StorageError:
                    raise
                except HermesError as exc:
                    raise _ReportFailed(dec, exc) from exc
            out.append(dec)
        return out

    while True:
        try:
            return board.db.write(tx) + failed
        except _ReportFailed as f:
            d = f.decision
            pending = [r for r in pending if r is not d.report]
            failed.append(Decision(d.report, d.status, CONFLICT, "apply_failed", detail=f.error.message))
