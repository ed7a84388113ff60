"""Reading a board: tasks, details, events, counts and stats, runs, logs, context, diagnostics, settings. Part of Board
(domain/board.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..core.errors import InvalidValue
from ..core.models import Event, RunOutcome, Task, TaskDetail, TaskStatus
from ..core.values import (
    check_profile,
    check_task_id,
)
from ..store import tasks as sql
from .board_core import (
    SORTS,
    BoardCore,
)


class Queries(BoardCore):
    """Reading a board: tasks, details, events, counts and stats, runs, logs, context, diagnostics, settings."""

    def get_task(self, task_id: str) -> Task:
        return self._task(task_id)

    def list_tasks(
        self,
        *,
        status: str | Iterable[str] | None = None,
        tenant: str | None = None,
        parent: str | None = None,
        search: str | None = None,
        sort: str = "priority",
        limit: int | None = None,
        offset: int = 0,
        assignee: str | None = None,
    ) -> list[Task]:
        statuses = [status] if isinstance(status, str) else list(status or [])
        for s in statuses:
            if s not in TaskStatus._value2member_map_:
                raise InvalidValue(f"invalid status {s!r}: use one of {', '.join(TaskStatus)}")
        if sort not in SORTS:
            raise InvalidValue(f"invalid sort {sort!r}: use one of {', '.join(SORTS)}")
        if parent is not None:
            self._task(parent)
        if limit is not None and limit < 0:
            raise InvalidValue(f"invalid limit {limit}: must be 0 or more")
        return sql.list_tasks(
            self.db, statuses=statuses, tenant=tenant, parent=parent, search=search, sort=sort, limit=limit,
            offset=offset, assignee=check_profile(assignee),
        )

    def detail(self, task_id: str, *, events: int = 20) -> TaskDetail:
        with self.db.read():
            task = self._task(task_id)
            return TaskDetail(
                task=task,
                parents=tuple(sql.parents(self.db, task.id)),
                children=tuple(sql.children(self.db, task.id)),
                runs=tuple(sql.runs_for(self.db, task.id)),
                comments=tuple(sql.comments_for(self.db, task.id)),
                events=tuple(reversed(sql.events_after(self.db, 0, task_id=task.id, limit=events, newest_first=True))),
            )

    def events(
        self, after: int = 0, *, task_id: str | None = None, kinds: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        if task_id is not None:
            check_task_id(task_id)
        return sql.events_after(self.db, after, task_id=task_id, kinds=kinds, limit=limit)

    def recent_events(self, limit: int = 50) -> list[Event]:
        return list(reversed(sql.events_after(self.db, 0, limit=limit, newest_first=True)))

    def last_event_id(self) -> int:
        return sql.last_event_id(self.db)

    def counts(self, tenant: str | None = None) -> dict[str, int]:
        return sql.count_by_status(self.db, tenant)

    def stats(self) -> dict[str, Any]:
        now = self.db.clock()
        with self.db.read():
            counts = sql.count_by_status(self.db)
            from ..store import stats as stats_sql  # here: stats is not a hot command's

            outcomes = stats_sql.run_outcome_counts(self.db)
            oldest_ready = stats_sql.oldest_ready_created_at(self.db)
            done_last_hour = stats_sql.done_since(self.db, now - 3600)
            open_runs = stats_sql.open_run_count(self.db)
            expired = stats_sql.expired_lease_count(self.db, now)
            events = sql.last_event_id(self.db)
            by_assignee: dict[str, dict[str, int]] = {}
            for r in sql.count_by_assignee(self.db):
                if r["assignee"] is not None:
                    by_assignee.setdefault(r["assignee"], {})[r["status"]] = r["n"]
        return {
            "board": self.slug,
            "total": sum(counts.values()),
            "by_status": counts,
            "run_outcomes": outcomes,
            "open_runs": open_runs,
            "expired_leases": expired,
            "done_last_hour": done_last_hour,
            "oldest_ready_age_s": None if oldest_ready is None else round(now - oldest_ready, 3),
            "last_event_id": events,
            "by_assignee": by_assignee,
        }

    def assignees(self) -> list[dict[str, Any]]:
        """Every assignee with its task counts by status (archived tasks not counted); unassigned tasks last, as
        name None."""
        by: dict[str | None, dict[str, int]] = {}
        for r in sql.count_by_assignee(self.db):
            by.setdefault(r["assignee"], {})[r["status"]] = r["n"]
        return [{"name": name, "counts": counts, "total": sum(counts.values())} for name, counts in by.items()]

    def runs(self, task_id: str) -> list[Any]:
        with self.db.read():
            task = self._task(task_id)
            return sql.runs_for(self.db, task.id)

    def read_log(self, task_id: str, tail_bytes: int | None = None) -> str | None:
        """The worker log of a task (`<board>/logs/<task>.log`), or its last `tail_bytes`; None if there is none."""
        check_task_id(task_id)
        self._task(task_id)
        path = self.paths.logs_dir / f"{task_id}.log"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InvalidValue(f"cannot read the log of task {task_id} ({path}): {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            if tail_bytes is not None:
                size = os.fstat(f.fileno()).st_size
                f.seek(max(0, size - tail_bytes))
            return f.read().decode("utf-8", "replace")

    def context(self, task_id: str) -> dict[str, Any]:
        """What a worker of this task sees: the task, its parents' results (with their summaries and metadata),
        its comments, and the environment the dispatcher gives it."""
        with self.db.read():
            task = self._task(task_id)
            parents = []
            for p in sql.parents(self.db, task.id):
                run = sql.latest_finished_run(self.db, p.id, (str(RunOutcome.COMPLETED),
                                                              str(RunOutcome.REVIEW_REQUESTED)))
                parents.append({
                    "id": p.id, "title": p.title, "status": str(p.status), "assignee": p.assignee,
                    "result": p.result if p.result is not None else (run.result if run else None),
                    "summary": p.summary, "metadata": run.metadata if run else None,
                })
            comments = sql.comments_for(self.db, task.id)
        from .workspaces import where  # here: only `context` needs it, not the hot commands

        ws = where(self.paths, task, sql.meta_get(self.db, "default_workdir"))
        env = {
            "HERMES_KANBAN_DB": str(self.paths.db),
            "HERMES_KANBAN_BOARD": self.slug,
            "HERMES_KANBAN_TASK": task.id,
            "HERMES_KANBAN_RUN_ID": str(task.current_run_id) if task.current_run_id else None,
            # where the dispatcher runs its worker (domain/workspaces.py); not created by looking
            "HERMES_KANBAN_WORKSPACE": str(ws.path),
        }
        if ws.kind == "worktree":
            env["HERMES_KANBAN_BRANCH"] = ws.branch
        if task.assignee is not None:
            env["HERMES_PROFILE"] = task.assignee
        last = sql.events_after(self.db, 0, task_id=task.id, kinds=["model_override_set"], limit=1, newest_first=True)
        if last and last[0].payload.get("model") is not None:
            env["HERMES_KANBAN_MODEL"] = last[0].payload["model"]
            if last[0].payload.get("provider"):
                env["HERMES_KANBAN_PROVIDER"] = last[0].payload["provider"]
        return {"task": task.as_dict(), "parents": parents, "comments": [c.as_dict() for c in comments],
                "environment": env}

    def diagnostics(self, task_id: str | None = None, *, severity: str | None = None,
                    ready_wait_s: float = 3600.0) -> list[dict[str, Any]]:
        """What needs a person: stranded runs (lease expired), stuck tasks (ready a long time, blocked, waiting on
        a blocked parent, parked in triage) and looping ones (retrying, blocked again and again). Each with the
        next command to run. `severity` keeps that level and above (warning < error < critical)."""
        from .diagnose import SEVERITIES, Facts, diagnose

        if severity is not None and severity not in SEVERITIES:
            raise InvalidValue(f"invalid severity {severity!r}: use one of {', '.join(SEVERITIES)}")
        with self.db.read():
            if task_id is not None:
                tasks = [self._task(task_id)]
            else:
                tasks = sql.list_tasks(self.db, statuses=[s for s in TaskStatus if s != TaskStatus.ARCHIVED])
            facts = [
                Facts(t, sql.runs_for(self.db, t.id), sql.parents(self.db, t.id),
                      sql.events_after(self.db, 0, task_id=t.id, kinds=("blocked", "unblocked", "gave_up")))
                for t in tasks
            ]
        found = diagnose(facts, time.time(), ready_wait_s)
        if severity is not None:
            floor = SEVERITIES.index(severity)
            found = [d for d in found if SEVERITIES.index(d["severity"]) >= floor]
        return found


    def open_runs(self) -> list[Any]:
        return sql.open_runs(self.db)

    def next_retry_at(self) -> float | None:
        # any task (any_command) and any time: the earliest retry of a ready task (one query, store/dispatch.py)
        from ..store import dispatch as dispatch_sql  # here: only a dispatcher asks

        return dispatch_sql.next_retry_at(self.db, any_command=True, after=float("-inf"))
