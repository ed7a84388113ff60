"""Dependencies: link, unlink, promotion of children whose parents are finished, manual promote. Part of Board
(domain/board.py)."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.errors import CycleRefused, InvalidTransition, InvalidValue, NotFound
from ..core.models import Task, TaskStatus
from ..core.values import (
    check_task_id,
    check_text,
)
from ..store import tasks as sql
from .board_core import BoardCore


class Links(BoardCore):
    """Dependencies: link, unlink, promotion of children whose parents are finished, manual promote."""

    def link(self, parent_id: str, child_id: str) -> Task:
        """Make `child` wait for `parent`. Refuses cycles; a ready child goes back to todo."""
        check_task_id(parent_id)
        check_task_id(child_id)
        if parent_id == child_id:
            raise CycleRefused(f"cannot link {parent_id} to itself")

        def tx(now: float) -> Task:
            parent, child = self._task(parent_id), self._task(child_id)
            if child.status not in (TaskStatus.TODO, TaskStatus.READY, TaskStatus.BLOCKED):
                raise InvalidTransition(
                    f"task {child.id} is {child.status}; only todo, ready or blocked tasks can gain a parent"
                )
            if parent.status == TaskStatus.ARCHIVED:
                raise InvalidValue(f"parent {parent.id} is archived; pick a live parent")
            if sql.is_ancestor(self.db, child.id, parent.id):
                raise CycleRefused(
                    f"linking {parent.id} -> {child.id} would create a cycle ({child.id} is an ancestor)"
                )
            if not sql.add_link(self.db, parent.id, child.id, now):
                return child
            self._event("linked", now, child.id, parent=parent.id)
            if child.status == TaskStatus.READY and parent.status not in (TaskStatus.DONE, TaskStatus.ARCHIVED):
                sql.update_task(self.db, child.id, now, status="todo")
                self._event("status", now, child.id, status="todo", reason="waiting on parent", parent=parent.id)
            return sql.get_task(self.db, child.id)

        return self._write(tx)

    def unlink(self, parent_id: str, child_id: str) -> Task:
        check_task_id(parent_id)
        check_task_id(child_id)

        def tx(now: float) -> Task:
            parent, child = self._task(parent_id), self._task(child_id)
            if not sql.remove_link(self.db, parent.id, child.id):
                raise NotFound(f"no link {parent.id} -> {child.id} (see: hermes kanban show {child.id})")
            self._event("unlinked", now, child.id, parent=parent.id)
            if child.status == TaskStatus.TODO and sql.unfinished_parent_count(self.db, child.id) == 0:
                sql.update_task(self.db, child.id, now, status="ready")
                self._event("promoted", now, child.id, status="ready")
            return sql.get_task(self.db, child.id)

        return self._write(tx)

    def _promote_children(self, parent_id: str, now: float) -> None:
        for child_id in sql.todo_children_ready_to_promote(self.db, parent_id):
            sql.update_task(self.db, child_id, now, status="ready")
            self._event("promoted", now, child_id, status="ready", parent=parent_id)

    def promote(self, task_ids: Sequence[str], *, force: bool = False, dry_run: bool = False,
                reason: str | None = None) -> list[Task]:
        """Move todo, blocked or triage tasks to ready (all of them in one transaction, or none). A task with an
        unfinished parent needs `force`. With `dry_run` everything is checked and nothing changes."""
        ids = list(dict.fromkeys(check_task_id(t) for t in task_ids))
        reason = check_text(reason, "reason", limit=2000)

        def check(task: Task) -> None:
            if task.status not in (TaskStatus.TODO, TaskStatus.BLOCKED, TaskStatus.TRIAGE):
                raise InvalidTransition(
                    f"cannot promote task {task.id}: it is {task.status}; only todo, blocked or triage tasks can be "
                    "promoted"
                )
            open_parents = [p for p in sql.parents(self.db, task.id)
                            if p.status not in (TaskStatus.DONE, TaskStatus.ARCHIVED)]
            if open_parents and not force:
                names = ", ".join(f"{p.id} ({p.status})" for p in open_parents)
                raise InvalidTransition(
                    f"cannot promote task {task.id}: unfinished parents {names}; finish them, or pass --force"
                )

        if dry_run:
            with self.db.read():
                tasks = [self._task(t) for t in ids]
                for t in tasks:
                    check(t)
                return tasks

        def tx(now: float) -> list[Task]:
            out = []
            for t in ids:
                task = self._task(t)
                check(task)
                sql.update_task(self.db, task.id, now, status="ready", retry_at=None, block_kind=None,
                                attempts=0 if task.status == TaskStatus.BLOCKED else task.attempts)
                self._event("promoted_manual", now, task.id, status="ready", previous=str(task.status),
                            reason=reason, forced=force or None)
                out.append(sql.get_task(self.db, task.id))
            return out

        return self._write(tx)
