"""Finishing runs: complete, block, request_review, a dispatcher's finish_run, and a spooled report (apply_report).
Part of Board (domain/board.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.errors import AlreadyClaimed, InvalidTransition, InvalidValue
from ..core.models import Claim, RunOutcome, Task, TaskStatus
from ..core.values import (
    check_block_kind,
    check_metadata,
    check_profile,
    check_report_text,
    check_task_id,
    check_text,
    parse_duration,
)
from ..store import tasks as sql
from .board_claims import Claims
from .board_core import (
    DEFAULT_LEASE_S,
    retry_delay,
)
from .board_links import Links


class Finishing(Claims, Links):
    """Finishing runs: complete, block, request_review, a dispatcher's finish_run, and a spooled report
    (apply_report)."""

    def finish_run(
        self,
        task_id: str,
        run_id: int,
        outcome: RunOutcome | str,
        *,
        summary: str | None = None,
        exit_code: int | None = None,
        retry_after: float | None = None,
        give_up: bool = False,
    ) -> Task:
        """Close a run that ended without a report: `completed` (exit 0), `crashed` or `timed_out`.

        Failures retry after exponential backoff with jitter until max_retries, then the task is blocked with a
        `gave_up` event. `give_up` blocks it now whatever retries are left (the dispatcher's --failure-limit).
        Fenced like every worker write.
        """
        outcome = RunOutcome(outcome)
        if outcome == RunOutcome.COMPLETED:
            return self.complete(task_id, run_id, summary=summary or "exited 0", exit_code=exit_code)
        if outcome not in (RunOutcome.CRASHED, RunOutcome.TIMED_OUT, RunOutcome.RECLAIMED):
            raise InvalidValue(f"finish_run cannot record outcome {outcome}")

        def tx(now: float) -> Task:
            task = self._fenced(task_id, run_id, str(outcome))
            sql.close_run(self.db, run_id, str(outcome), now, summary, exit_code)
            will_retry = task.attempts <= task.max_retries and not give_up
            delay = retry_delay(task.attempts) if retry_after is None else retry_after
            self._event(
                str(outcome), now, task.id, run_id, summary=summary, exit_code=exit_code, attempt=task.attempts,
                will_retry=will_retry, retry_in_s=round(delay, 3) if will_retry else None,
            )
            return self._after_failure(task, now, outcome, retry_at=now + delay, give_up=give_up)

        return self._write(tx)

    def complete(
        self,
        task_id: str,
        run_id: int | None = None,
        *,
        summary: str | None = None,
        force: bool = False,
        exit_code: int | None = None,
        result: str | None = None,
        metadata: dict[str, Any] | str | None = None,
    ) -> Task:
        """Finish a task: `done` (children promoted), or `review` when the task is review-gated.

        With `run_id` (a worker): fenced. Repeating a completion that already landed for the same run is a no-op.
        Without (a person): ready or blocked tasks only; a running task needs `force`, which closes the live run.
        `result` (text) and `metadata` (a JSON object) are kept on the run and handed to the children (`context`);
        the summary defaults to the result.
        """
        check_task_id(task_id)
        result = check_report_text(result, "result")
        meta = check_metadata(metadata)
        # A worker's plain completion is the fast path below: on a PostgreSQL board it takes the writers' turn only
        # to commit (PgDatabase.write, late_turn), and anything else makes it run again with the turn first.
        fast = run_id is not None and result is None and meta is None
        return self._write(lambda now: self._complete_one(task_id, run_id, now, summary=summary, force=force,
                                                          exit_code=exit_code, result=result, metadata=meta),
                           late_turn=fast)

    def complete_many(self, task_ids: Sequence[str], *, result: str | None = None, force: bool = False) -> list[Task]:
        """An operator completing several tasks at once: all of them in one transaction, or none."""
        ids = list(dict.fromkeys(check_task_id(t) for t in task_ids))
        result = check_report_text(result, "result")
        return self._write(lambda now: [
            self._complete_one(t, None, now, summary=None, force=force, result=result) for t in ids])

    def complete_next(
        self,
        task_id: str,
        run_id: int,
        *,
        summary: str | None = None,
        exit_code: int | None = None,
        worker: str | None = None,
        ttl: str | float = DEFAULT_LEASE_S,
        pid: int | None = None,
        pid_create_time: float | None = None,
        tenant: str | None = None,
    ) -> tuple[Task, Claim | None]:
        """Complete `task_id` under `run_id` and claim the next ready task, in ONE transaction (one commit, one fsync
        per task for a pull worker instead of two).

        Exactly `complete(task_id, run_id, summary=...)` followed by `claim(worker=..., ttl=..., tenant=...)`: fenced
        the same way (a stale run raises StaleRun and nothing is completed or claimed), a repeated completion is a
        no-op that still claims, expired leases are reclaimed first, and when nothing is ready the completion stands
        and the reclaims are undone (as a claim that finds nothing changes nothing). Returns (the completed task,
        the new claim or None).
        """
        lease_s = parse_duration(ttl, what="lease ttl")
        check_task_id(task_id)
        worker = check_text(worker, "worker")

        def tx(now: float) -> tuple[Task, Claim | None]:
            task = self._complete_one(task_id, run_id, now, summary=summary, force=False, exit_code=exit_code)
            claim = self._claim_ready(now, lease_s, worker, pid, pid_create_time, tenant, unless_expired=True)
            if claim is not None:
                return task, claim
            expired = sql.expired_running(self.db, now)
            if not expired:
                return task, None
            self.db.savepoint("claim_next")
            for t in expired:
                self._reclaim_one(t, now, retry=True)
            claim = self._claim_ready(now, lease_s, worker, pid, pid_create_time, tenant)
            if claim is None:
                self.db.rollback_to("claim_next")
            self.db.release("claim_next")
            return task, claim

        return self._write(tx)

    def _complete_one(self, task_id: str, run_id: int | None, now: float, *, summary: str | None, force: bool,
                      exit_code: int | None = None, result: str | None = None,
                      metadata: dict[str, Any] | None = None) -> Task:
        if run_id is not None and result is None and metadata is None:
            # The common case in one statement: the fenced UPDATE matches only while run_id is the task's current
            # run of a task without a review gate. Anything else changed nothing and takes the careful path below,
            # which decides between a repeat (no-op), review, and StaleRun exactly as before.
            finished = sql.complete_current_run(self.db, task_id, run_id, now, summary)
            if finished is None or finished[1]:
                self.db.need_turn()  # the careful path or children to promote: a late-turn write starts again
            if finished is not None:
                done, has_children = finished
                # Our UPDATE locked the task's row, so nothing about it can change before COMMIT; a child can still be
                # linked to it meanwhile by a writer in the turn (the link saw it running): checked under the turn.
                self.db.check_at_turn(*sql.children_probe(task_id))
                sql.close_run(self.db, run_id, str(RunOutcome.COMPLETED), now, summary, exit_code)
                self._event("completed", now, task_id, run_id, summary=summary, title=done.title, forced=force or None)
                if has_children:
                    self._promote_children(task_id, now)
                return done
        task = self._task(task_id)
        if run_id is not None:
            already = self._already_finished(task, run_id, (RunOutcome.COMPLETED, RunOutcome.REVIEW_REQUESTED))
            if already:
                return task
            self._fenced(task_id, run_id, "complete")
            closing: int | None = run_id
        else:
            closing = self._closable_without_run(task, force, "complete")
        if summary is None:
            summary = result
        return self._finish_complete(task, closing, now, summary, exit_code=exit_code, forced=force or None,
                                     result=result, metadata=metadata)

    def apply_report(self, task: Task, kind: str, now: float, summary: str | None, *, run_id: int | None,
                     forced: bool, extra: dict[str, Any]) -> Task:
        """Apply a spooled `complete` or `block` report exactly as the command would have (durability/reconcile.py,
        which has decided that it applies): inside the caller's write transaction; the events name the reporting
        run and carry reconciled=True."""
        closing = task.current_run_id if task.status == TaskStatus.RUNNING else None
        if kind == "complete":
            return self._finish_complete(task, closing, now, summary, event_run_id=run_id, reconciled=True,
                                         forced=forced or None, result=extra.get("result"),
                                         metadata=extra.get("metadata"))
        return self._finish_block(task, closing, now, summary, event_run_id=run_id, reconciled=True,
                                  kind=extra.get("block_kind"))

    # The effects of complete and block, shared with reconcile (a spooled report applies exactly what the command
    # would have done). Callers have validated the transition and hold the write transaction. `closing` is the open
    # run to close (None when there is none); the event names `event_run_id` when given (reconcile: the reporting
    # run of a late report, already closed), else the closed run.
    def _finish_complete(self, task: Task, closing: int | None, now: float, summary: str | None, *,
                         exit_code: int | None = None, event_run_id: int | None = None,
                         result: str | None = None, metadata: dict[str, Any] | None = None,
                         **event_extra: Any) -> Task:
        """`review` for a review-gated task, else `done` with children promoted. A result or metadata is kept on
        the closing run; a person completing a task that has no run gets a zero-length one to carry them."""
        if result is not None or metadata is not None:
            # kept on the run that reported it: the closing run, or a late (spooled) report's own run
            carrier = closing if closing is not None else event_run_id
            if carrier is None:
                carrier = closing = sql.insert_run(self.db, task.id, now, now, "operator", self._host, None, None)
            sql.set_run_report(self.db, carrier, result, metadata)
            if result is not None:
                sql.update_task(self.db, task.id, now, result=result)
        if task.review_required:
            return self._to_review(task, closing, now, summary, event_run_id=event_run_id, **event_extra)
        if closing is not None:
            sql.close_run(self.db, closing, str(RunOutcome.COMPLETED), now, summary, exit_code)
        sql.update_task(self.db, task.id, now, status="done", summary=summary, completed_at=now,
                        current_run_id=None, lease_expires_at=None, retry_at=None)
        self._event("completed", now, task.id, closing if event_run_id is None else event_run_id, summary=summary,
                    title=task.title, **event_extra)
        self._promote_children(task.id, now)
        return sql.get_task(self.db, task.id)

    def _finish_block(self, task: Task, closing: int | None, now: float, reason: str | None, *,
                      event_run_id: int | None = None, kind: str | None = None, **event_extra: Any) -> Task:
        """`blocked` for a person; a `dependency` block of a task with an unfinished parent waits in `todo` instead
        (promoted when its parents finish). With no parent to wait on it needs a person (`needs_input`)."""
        if closing is not None:
            sql.close_run(self.db, closing, str(RunOutcome.BLOCKED), now, reason)
        run_ref = closing if event_run_id is None else event_run_id
        if kind == "dependency" and sql.unfinished_parent_count(self.db, task.id):
            sql.update_task(self.db, task.id, now, status="todo", current_run_id=None, lease_expires_at=None,
                            retry_at=None, block_kind="dependency")
            self._event("dependency_wait", now, task.id, run_ref, reason=reason, title=task.title, **event_extra)
            return sql.get_task(self.db, task.id)
        if kind == "dependency":
            kind = "needs_input"
        sql.update_task(self.db, task.id, now, status="blocked", current_run_id=None, lease_expires_at=None,
                        retry_at=None, block_kind=kind)
        if kind is not None:
            event_extra["block_kind"] = kind
        self._event("blocked", now, task.id, run_ref, reason=reason, title=task.title, **event_extra)
        return sql.get_task(self.db, task.id)

    def _already_finished(self, task: Task, run_id: int, outcomes: tuple[RunOutcome, ...]) -> bool:
        if task.status == TaskStatus.RUNNING and task.current_run_id == run_id:
            return False
        run = sql.get_run(self.db, run_id)
        return run is not None and run.task_id == task.id and run.outcome in outcomes

    def _closable_without_run(self, task: Task, force: bool, action: str) -> int | None:
        """For a change made without a run id: the run to close (only with force), or None."""
        if task.status == TaskStatus.RUNNING:
            if not force:
                raise AlreadyClaimed(
                    f"task {task.id} is claimed by run {task.current_run_id}; workers pass --run-id "
                    f"(or HERMES_KANBAN_RUN_ID); to override the live claim use --force"
                )
            return task.current_run_id
        allowed = {"complete": (TaskStatus.READY, TaskStatus.BLOCKED), "block": (TaskStatus.READY, TaskStatus.TODO),
                   "request-review": (TaskStatus.READY, TaskStatus.BLOCKED)}[action]
        if task.status not in allowed:
            hint = {
                TaskStatus.REVIEW: f"it is in review (see: hermes kanban approve {task.id})",
                TaskStatus.DONE: "it is already done",
                TaskStatus.TODO: f"it is waiting on its parents (see: hermes kanban show {task.id})",
                TaskStatus.ARCHIVED: "it is archived",
                TaskStatus.BLOCKED: f"it is already blocked (see: hermes kanban unblock {task.id})",
            }.get(task.status, f"it is {task.status}")
            raise InvalidTransition(f"cannot {action} task {task.id}: {hint}")
        return None

    def _to_review(self, task: Task, run_id: int | None, now: float, summary: str | None, *,
                   event_run_id: int | None = None, **event_extra: Any) -> Task:
        if run_id is not None:
            sql.close_run(self.db, run_id, str(RunOutcome.REVIEW_REQUESTED), now, summary)
        sql.update_task(self.db, task.id, now, status="review", summary=summary, current_run_id=None,
                        lease_expires_at=None, retry_at=None)
        self._event("review_requested", now, task.id, run_id if event_run_id is None else event_run_id,
                    summary=summary, title=task.title, **event_extra)
        return sql.get_task(self.db, task.id)

    def request_review(self, task_id: str, run_id: int | None = None, *, summary: str | None = None,
                       force: bool = False, metadata: dict[str, Any] | str | None = None,
                       reviewer: str | None = None) -> Task:
        """Send a task to review. `metadata` (a JSON object) is kept on the closing run, as complete keeps it, and
        on the `review_requested` event; `reviewer` (a profile) is who should review it, kept on the event."""
        check_task_id(task_id)
        meta = check_metadata(metadata)
        reviewer = check_profile(reviewer, "reviewer")
        extra: dict[str, Any] = {k: v for k, v in (("reviewer", reviewer), ("metadata", meta)) if v is not None}

        def tx(now: float) -> Task:
            task = self._task(task_id)
            if run_id is not None:
                if self._already_finished(task, run_id, (RunOutcome.REVIEW_REQUESTED,)):
                    return task
                self._fenced(task_id, run_id, "request-review")
                closing: int | None = run_id
            else:
                closing = self._closable_without_run(task, force, "request-review")
            if meta is not None and closing is not None:
                sql.set_run_report(self.db, closing, None, meta)
            return self._to_review(task, closing, now, summary, **extra)

        return self._write(tx)

    def block(self, task_id: str, run_id: int | None = None, *, reason: str | None = None, force: bool = False,
              kind: str | None = None) -> Task:
        """Block a task (`kind`: dependency, needs_input, capability or transient; see _finish_block)."""
        check_task_id(task_id)
        reason = (reason or "").strip() or None
        kind = check_block_kind(kind)
        return self._write(lambda now: self._block_one(task_id, run_id, now, reason=reason, force=force, kind=kind))

    def block_many(self, task_ids: Sequence[str], *, reason: str | None = None, force: bool = False,
                   kind: str | None = None, run_ids: dict[str, int] | None = None) -> list[Task]:
        """Block several tasks with one reason, in one transaction (all or none). `run_ids` fences the tasks it
        names (a worker's own task)."""
        ids = list(dict.fromkeys(check_task_id(t) for t in task_ids))
        reason = (reason or "").strip() or None
        kind = check_block_kind(kind)
        runs = run_ids or {}
        return self._write(lambda now: [
            self._block_one(t, runs.get(t), now, reason=reason, force=force, kind=kind) for t in ids])

    def _block_one(self, task_id: str, run_id: int | None, now: float, *, reason: str | None, force: bool,
                   kind: str | None) -> Task:
        task = self._task(task_id)
        if run_id is not None:
            if self._already_finished(task, run_id, (RunOutcome.BLOCKED,)):
                return task
            self._fenced(task_id, run_id, "block")
            closing: int | None = run_id
        else:
            closing = self._closable_without_run(task, force, "block")
        return self._finish_block(task, closing, now, reason, kind=kind)
