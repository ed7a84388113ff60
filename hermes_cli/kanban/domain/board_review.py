"""A person's decisions: unblock, approve, request changes, archive. Part of Board (domain/board.py)."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.errors import InvalidTransition, InvalidValue
from ..core.models import RunOutcome, Task, TaskStatus
from ..core.values import (
    check_task_id,
    check_text,
)
from ..store import tasks as sql
from .board_links import Links


class Review(Links):
    """A person's decisions: unblock, approve, request changes, archive."""

    def unblock(self, task_id: str, *, reason: str | None = None) -> Task:
        """blocked -> ready (or todo while parents are unfinished), with a fresh retry budget."""
        return self.unblock_many([task_id], reason=reason)[0]

    def unblock_many(self, task_ids: Sequence[str], *, reason: str | None = None) -> list[Task]:
        """unblock for several tasks in one transaction: all of them, or none when one cannot be unblocked."""
        ids = list(dict.fromkeys(check_task_id(t) for t in task_ids))
        reason = check_text(reason, "reason", limit=2000)

        def tx(now: float) -> list[Task]:
            return [one(t, now) for t in ids]

        def one(task_id: str, now: float) -> Task:
            task = self._task(task_id)
            if task.status != TaskStatus.BLOCKED:
                raise InvalidTransition(f"cannot unblock task {task.id}: it is {task.status}, not blocked")
            status = self._todo_or_ready(task.id)
            sql.update_task(self.db, task.id, now, status=status, attempts=0, retry_at=None, block_kind=None)
            self._event("unblocked", now, task.id, status=status, reason=reason)
            return sql.get_task(self.db, task.id)

        return self._write(tx)

    def approve(self, task_id: str, *, summary: str | None = None) -> Task:
        check_task_id(task_id)

        def tx(now: float) -> Task:
            task = self._task(task_id)
            if task.status != TaskStatus.REVIEW:
                raise InvalidTransition(f"cannot approve task {task.id}: it is {task.status}, not in review")
            final = summary or task.summary
            sql.update_task(self.db, task.id, now, status="done", summary=final, completed_at=now)
            self._event("completed", now, task.id, summary=final, title=task.title, approved=True)
            self._promote_children(task.id, now)
            return sql.get_task(self.db, task.id)

        return self._write(tx)

    def request_changes(self, task_id: str, *, reason: str) -> Task:
        check_task_id(task_id)
        reason = (reason or "").strip()
        if not reason:
            raise InvalidValue("say what needs to change, e.g. hermes kanban request-changes t_3fa2 \"add tests\"")

        def tx(now: float) -> Task:
            task = self._task(task_id)
            if task.status != TaskStatus.REVIEW:
                raise InvalidTransition(f"cannot request changes on task {task.id}: it is {task.status}, not in review")
            status = self._todo_or_ready(task.id)
            sql.update_task(self.db, task.id, now, status=status, attempts=0, retry_at=None)
            sql.insert_comment(self.db, task.id, "review", reason, now)
            self._event("changes_requested", now, task.id, reason=reason, status=status)
            return sql.get_task(self.db, task.id)

        return self._write(tx)

    def archive(self, task_id: str) -> Task:
        """Put a task away. A live run is closed (its worker's later writes are fenced off); children waiting on
        it are released, as archived parents count as finished."""
        check_task_id(task_id)
        return self._write(lambda now: self._archive_one(self._task(task_id), now))

    def archive_many(self, task_ids: Sequence[str]) -> list[Task]:
        """archive for several tasks in one transaction: all of them, or none."""
        ids = list(dict.fromkeys(check_task_id(t) for t in task_ids))
        return self._write(lambda now: [self._archive_one(self._task(t), now) for t in ids])

    def _archive_one(self, task: Task, now: float) -> Task:
        if task.status == TaskStatus.ARCHIVED:
            raise InvalidTransition(f"task {task.id} is already archived")
        if task.current_run_id is not None and task.status == TaskStatus.RUNNING:
            sql.close_run(self.db, task.current_run_id, str(RunOutcome.RECLAIMED), now, "archived")
        sql.update_task(self.db, task.id, now, status="archived", current_run_id=None, lease_expires_at=None,
                        retry_at=None)
        self._event("archived", now, task.id, previous=str(task.status))
        self._promote_children(task.id, now)
        return sql.get_task(self.db, task.id)
