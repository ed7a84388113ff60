"""Creating and editing tasks, comments, deleting archived tasks, gc, board settings. Part of Board
(domain/board.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import HermesError, InvalidTransition, InvalidValue
from ..core.hubconf import configured_hub, redact
from ..core.models import Comment, RunOutcome, Task, TaskStatus, iso
from ..core.values import (
    INITIAL_STATUSES,
    check_body,
    check_branch,
    check_command,
    check_metadata,
    check_priority,
    check_profile,
    check_report_text,
    check_retries,
    check_task_id,
    check_text,
    check_title,
    check_workspace,
    parse_duration,
    parse_time,
)
from ..store import sync as sync_sql
from ..store import tasks as sql
from .board_core import (
    BOARD_SETTINGS,
    DEFAULT_MAX_RETRIES,
    BoardCore,
    new_task_id,
)


class Editing(BoardCore):
    """Creating and editing tasks, comments, deleting archived tasks, gc, board settings."""

    def create_task(
        self,
        title: str,
        *,
        body: str = "",
        priority: int = 0,
        parents: Sequence[str] = (),
        command: str | None = None,
        tenant: str | None = None,
        idempotency_key: str | None = None,
        max_runtime: str | float | None = None,
        max_retries: int | None = None,
        review: bool = False,
        assignee: str | None = None,
        created_by: str | None = None,
        skills: Sequence[str] = (),
        triage: bool = False,
        initial_status: str | None = None,
        workspace: str | None = None,
        branch: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        scheduled_at: str | float | None = None,
    ) -> tuple[Task, bool]:
        """Create a task. Returns (task, created); with an idempotency key already in use, the existing task and
        False.

        `assignee` is the profile that works on it; `created_by` and `skills` are stored for people and workers.
        `triage` parks it in `triage` (until `promote`); `initial_status="blocked"` creates it blocked (hermes-agent's
        `--initial-status blocked`); "running" means the usual: ready, or todo while a parent is unfinished.
        `workspace` is where its worker runs (core.values.check_workspace; None: the board's default workdir, else a
        scratch directory); `branch` names a worktree workspace's branch. `model`/`provider` set its model override
        (see set_model). `scheduled_at` (hermes-agent's `--scheduled-at`, ISO 8601 or epoch seconds): nothing claims or
        starts it before then (kept as its `retry_at`, which the ready queue honours; `claim ID` refuses it too)."""
        title = check_title(title)
        body = check_body(body or "")
        priority = check_priority(priority)
        command = check_command(command)
        tenant = check_text(tenant, "tenant")
        idempotency_key = check_text(idempotency_key, "idempotency key")
        runtime = None if max_runtime is None else parse_duration(max_runtime, what="max-runtime")
        retries = DEFAULT_MAX_RETRIES if max_retries is None else check_retries(max_retries)
        parent_ids = list(dict.fromkeys(check_task_id(p) for p in parents))
        assignee = check_profile(assignee)
        created_by = check_text(created_by, "created-by")
        skill_list = list(dict.fromkeys(check_text(k, "skill") or "" for k in skills))
        if initial_status is not None and initial_status not in INITIAL_STATUSES:
            raise InvalidValue(f"invalid initial status {initial_status!r}: use one of {', '.join(INITIAL_STATUSES)}")
        if triage and initial_status == "blocked":
            raise InvalidValue("use either --triage or --initial-status blocked, not both")
        workspace = check_workspace(workspace)
        branch = check_branch(branch)
        if branch is not None and not (workspace or "").startswith("worktree"):
            raise InvalidValue(f"--branch {branch} needs --workspace worktree (a branch is made only for a worktree)")
        model = check_text(model, "model")
        provider = check_text(provider, "provider")
        if model is None and provider is not None:
            raise InvalidValue("--provider needs --model: hermes kanban create TITLE --model M --provider P")
        start_at = None if scheduled_at is None else parse_time(scheduled_at)

        def tx(now: float) -> tuple[Task, bool]:
            if idempotency_key is not None:
                existing = sql.find_by_idempotency_key(self.db, idempotency_key)
                if existing is not None:
                    return existing, False
            parent_tasks = [sql.get_task(self.db, p) for p in parent_ids]
            for p in parent_tasks:
                if p.status == TaskStatus.ARCHIVED:
                    raise InvalidValue(f"parent {p.id} is archived; pick a live parent (see: hermes kanban list)")
            task_tenant = tenant
            if task_tenant is None:
                task_tenant = next((p.tenant for p in parent_tasks if p.tenant), None)
            waiting = any(p.status not in (TaskStatus.DONE, TaskStatus.ARCHIVED) for p in parent_tasks)
            task_id = new_task_id()
            while sql.task_exists(self.db, task_id):
                task_id = new_task_id()
            status = TaskStatus.TODO if waiting else TaskStatus.READY
            if triage:
                status = TaskStatus.TRIAGE
            elif initial_status == "blocked":
                status = TaskStatus.BLOCKED
            sql.insert_task(
                self.db,
                {
                    "id": task_id, "title": title, "body": body, "status": str(status), "priority": priority,
                    "tenant": task_tenant, "command": command, "idempotency_key": idempotency_key,
                    "review_required": int(review), "max_runtime_s": runtime, "max_retries": retries,
                    "created_at": now, "updated_at": now, "assignee": assignee, "created_by": created_by,
                    "skills": json.dumps(skill_list) if skill_list else None,
                    "block_kind": "needs_input" if status == TaskStatus.BLOCKED else None,
                    "workspace": workspace, "branch": branch,
                    # a schedule is a first start not before then: the ready queue's `retry_at`, with no attempt yet
                    "retry_at": start_at if start_at is not None and start_at > now else None,
                },
            )
            for p in parent_tasks:
                sql.add_link(self.db, p.id, task_id, now)
            who: dict[str, Any] = {k: v for k, v in (("assignee", assignee), ("created_by", created_by)) if v}
            if start_at is not None and start_at > now:
                who["scheduled_at"] = iso(start_at)
            self._event(
                "created", now, task_id, title=title, status=str(status), priority=priority,
                parents=[p.id for p in parent_tasks], tenant=task_tenant, **who,
            )
            if model is not None:
                self._event("model_override_set", now, task_id, model=model, provider=provider)
            return sql.get_task(self.db, task_id), True

        return self._write(tx)

    def set_model(self, task_id: str, model: str | None, provider: str | None = None) -> tuple[Task, dict[str, Any]]:
        """hermes-agent's model override of a task (`set-model ID MODEL|none [--provider P]`): kept as a
        `model_override_set` event (the latest one is the task's override; `model` None clears it) and handed to the
        task's next worker as HERMES_KANBAN_MODEL / HERMES_KANBAN_PROVIDER. The board does not run a model: the
        worker's command decides what to do with it. Archived tasks are refused."""
        model = check_text(model, "model")
        provider = check_text(provider, "provider")
        if model is None and provider is not None:
            raise InvalidValue("--provider needs a model: hermes kanban set-model ID MODEL --provider P")

        def tx(now: float) -> tuple[Task, dict[str, Any]]:
            task = self._task(task_id)
            if task.status == TaskStatus.ARCHIVED:
                raise InvalidValue(f"task {task.id} is archived; its model no longer matters")
            self._event("model_override_set", now, task.id, model=model, provider=provider)
            return task, {"model": model, "provider": provider}

        return self._write(tx)

    def model_override(self, task_id: str) -> dict[str, Any] | None:
        """The task's model override ({model, provider}), None when it has none (never set, or cleared)."""
        last = sql.events_after(self.db, 0, task_id=check_task_id(task_id), kinds=["model_override_set"], limit=1,
                                newest_first=True)
        if not last or last[0].payload.get("model") is None:
            return None
        return {"model": last[0].payload.get("model"), "provider": last[0].payload.get("provider")}

    def comment(self, task_id: str, body: str, *, author: str | None = None) -> Comment:
        text = (body or "").strip()
        if not text:
            raise InvalidValue("comment is empty: say something, e.g. hermes kanban comment t_3fa2 \"looks good\"")
        check_body(text)
        author = check_text(author, "author")

        def tx(now: float) -> Comment:
            task = self._task(task_id)
            c = sql.insert_comment(self.db, task.id, author, text, now)
            self._event("commented", now, task.id, comment_id=c.id, author=author)
            return c

        return self._write(tx)

    def edit(self, task_id: str, *, title: str | None = None, body: str | None = None,
             priority: int | str | None = None, result: str | None = None, summary: str | None = None,
             metadata: dict[str, Any] | str | None = None) -> Task:
        """Change a task's title, body or priority; backfill the result (with its summary and metadata) of a done
        task, kept on its last completed run too."""
        check_task_id(task_id)
        changes: dict[str, Any] = {}
        if title is not None:
            changes["title"] = check_title(title)
        if body is not None:
            changes["body"] = check_body(body)
        if priority is not None:
            changes["priority"] = check_priority(priority)
        result = check_report_text(result, "result") if result is not None else None
        summary = check_report_text(summary, "summary") if summary is not None else None
        meta = check_metadata(metadata)
        if result is None and (summary is not None or meta is not None):
            raise InvalidValue("--summary and --metadata backfill a result: give --result too")
        if not changes and result is None:
            raise InvalidValue("nothing to change: give --title, --body, --priority or --result")

        def tx(now: float) -> Task:
            task = self._task(task_id)
            if task.status == TaskStatus.ARCHIVED:
                raise InvalidTransition(f"cannot edit task {task.id}: it is archived")
            fields = dict(changes)
            if result is not None:
                if task.status != TaskStatus.DONE:
                    raise InvalidTransition(
                        f"cannot set the result of task {task.id}: it is {task.status}; a result is backfilled on "
                        f"a done task (a worker reports it with: hermes kanban complete {task.id} --result ...)"
                    )
                fields["result"] = result
                if summary is not None:
                    fields["summary"] = summary
                run = sql.latest_finished_run(self.db, task.id, (str(RunOutcome.COMPLETED),))
                if run is not None:
                    sql.set_run_report(self.db, run.id, result, meta if meta is not None else run.metadata)
            fields = {k: v for k, v in fields.items() if getattr(task, k) != v}
            if not fields:
                return task
            sql.update_task(self.db, task.id, now, **fields)
            self._event("edited", now, task.id, fields=sorted(fields))
            return sql.get_task(self.db, task.id)

        return self._write(tx)

    def delete_archived(self, task_ids: Sequence[str]) -> list[str]:
        """Delete archived tasks for good (their links, runs and comments; their events stay as the audit trail,
        with a `deleted` event). Refuses any task that is not archived; all or none."""
        ids = list(dict.fromkeys(check_task_id(t) for t in task_ids))

        def tx(now: float) -> list[str]:
            for t in ids:
                task = self._task(t)
                if task.status != TaskStatus.ARCHIVED:
                    raise InvalidTransition(
                        f"cannot delete task {task.id}: it is {task.status}; only archived tasks are deleted "
                        f"(archive it first: hermes kanban archive {task.id})"
                    )
                sql.delete_task(self.db, task.id)
                self._event("deleted", now, task.id, title=task.title)
            return ids

        return self._write(tx)

    def gc(self, *, event_retention_days: float = 30, log_retention_days: float = 30) -> dict[str, Any]:
        """Delete events older than N days of finished (done, archived, deleted) tasks, and worker logs not
        written for N days of tasks that are not running. Never an event a subscription has not consumed, nor one a
        hub has not acknowledged."""
        for name, days in (("event-retention-days", event_retention_days), ("log-retention-days",
                                                                            log_retention_days)):
            if isinstance(days, bool) or not 0 <= days <= 36500:
                raise InvalidValue(f"invalid --{name} {days!r}: use a number of days from 0 to 36500")
        now = self.db.clock()
        try:
            configured = configured_hub()
        except HermesError:
            configured = "(unreadable hub configuration)"  # a hub may be meant: keep everything (floor 0)
        hub = None if configured is None else redact(configured)

        def tx(now_: float) -> tuple[int, int | None]:
            cursor = sql.min_subscription_cursor(self.db)
            # Never an event a hub has not acknowledged: the lowest hub checkpoint is another floor (0 while a
            # configured hub has acknowledged nothing yet).
            hub_floor = sync_sql.gc_floor(self.db, hub)
            if hub_floor is not None:
                cursor = hub_floor if cursor is None else min(cursor, hub_floor)
            return sql.gc_events(self.db, now - event_retention_days * 86400, cursor), cursor

        events, cursor = self.db.write(lambda: tx(now))
        logs = 0
        running = {t.id for t in sql.list_tasks(self.db, statuses=["running"])}
        try:
            entries = list(os.scandir(self.paths.logs_dir))
        except FileNotFoundError:
            entries = []
        for e in entries:
            task = e.name.split(".log", 1)[0]
            if not e.name.startswith("t_") or ".log" not in e.name or task in running:
                continue
            try:
                if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_mtime < \
                        now - log_retention_days * 86400:
                    os.unlink(e.path)
                    logs += 1
            except FileNotFoundError:
                continue  # removed by someone else meanwhile: that is what we wanted
        return {"board": self.slug, "events_removed": events, "logs_removed": logs,
                "kept_after_event": cursor}

    def settings(self) -> dict[str, str | None]:
        with self.db.read():
            return {k: sql.meta_get(self.db, k) for k in BOARD_SETTINGS}

    def set_settings(self, **values: str | None) -> dict[str, str | None]:
        """Set board settings (name, description, icon, color, default_workdir); None clears one."""
        check_board_settings(values)

        def tx(now: float) -> None:
            changed = {}
            for k, v in values.items():
                if sql.meta_get(self.db, k) != v:
                    sql.meta_set(self.db, k, v)
                    changed[k] = v
            if changed:
                self._event("board_updated", now, None, settings=changed)

        self._write(tx)
        return self.settings()


def check_board_settings(values: Mapping[str, str | None]) -> None:
    """Refuse an unknown setting or a bad value (None clears one). `boards create` checks before it creates the
    board, so bad input creates nothing."""
    for k, v in values.items():
        if k not in BOARD_SETTINGS:
            raise InvalidValue(f"unknown board setting {k!r}: use one of {', '.join(BOARD_SETTINGS)}")
        if v is not None:
            check_text(v, k.replace("_", "-"), limit=4096 if k == "default_workdir" else 500)
