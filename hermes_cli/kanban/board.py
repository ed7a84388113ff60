"""The public API of one board: every state change the CLI, the dispatcher, the TUI and the tests make.

Each method validates its input first, then makes its change and writes its event in one IMMEDIATE transaction,
then rings the doorbell. A failing check raises a HermesError from inside the transaction, which rolls back: bad
input never changes the board.

Fencing: a claim opens a run whose id is the fencing token. heartbeat/complete/block/request_review with a run id
succeed only while that run is the task's current open run (`tasks.current_run_id`, status `running`); anything
else raises StaleRun (exit 3) and changes nothing.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from .errors import AlreadyClaimed, CycleRefused, InvalidTransition, InvalidValue, NotFound, StaleRun
from .models import Claim, Comment, Event, RunOutcome, Task, TaskDetail, TaskStatus, iso
from .paths import DEFAULT_BOARD, BoardPaths, resolve
from .store import tasks as sql
from .store.connection import Database, connect
from .store.schema import migrate
from .values import (
    check_body,
    check_command,
    check_priority,
    check_retries,
    check_task_id,
    check_text,
    check_title,
    parse_duration,
)

T = TypeVar("T")

#: lease of a claim when the caller does not say (seconds); workers heartbeat well within it
DEFAULT_LEASE_S = 120.0
DEFAULT_MAX_RETRIES = 3
#: backoff before retry n is BACKOFF_BASE_S * 2**(n-1), jittered +-25%, capped
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
SORTS = ("priority", "age", "newest", "updated")


def retry_delay(attempt: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Exponential backoff with jitter for the retry after failed attempt number `attempt` (1-based)."""
    raw = min(cap, base * 2 ** max(0, attempt - 1))
    return raw * random.uniform(0.75, 1.25)


class _NothingToClaim(Exception):
    """Raised inside a claim transaction that found no ready task, to roll it back."""


def new_task_id() -> str:
    return "t_" + os.urandom(6).hex()  # os.urandom is what secrets uses, without importing hashlib on the CLI path


class Board:
    """One open board. Not thread-safe: open one Board per thread (connections are cheap)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.paths: BoardPaths = db.paths
        self._host = os.uname().nodename  # = socket.gethostname(), without importing socket on the CLI path

    @classmethod
    def open(
        cls, board: str | None = None, db_path: str | None = None, *, create: bool | None = None,
        vfs: str | None = None,
    ) -> Board:
        """Open a board by slug or db path. The default board and pinned db paths are created on first use;
        any other slug must have been created (`hermes kanban boards create SLUG`). `vfs` names a registered SQLite
        VFS (tests/torture's power-cut simulation); None is SQLite's default."""
        paths = resolve(board, db_path)
        if create is None:
            # A slug from HERMES_KANBAN_BOARD must exist like one from --board: a typo never makes a new board.
            pinned = db_path is not None or (board is None and bool(os.environ.get("HERMES_KANBAN_DB")))
            create = pinned or paths.slug == DEFAULT_BOARD
        if not create and not paths.db.exists():
            raise NotFound(f"board {paths.slug} does not exist (see: hermes kanban boards create {paths.slug})")
        db = connect(paths, create=create, vfs=vfs)
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
        return cls(db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def slug(self) -> str:
        return self.paths.slug

    # -- plumbing ----------------------------------------------------------------------------------------------------
    def _write(self, fn: Callable[[float], T]) -> T:
        """Run `fn(now)` in one write transaction. Every event it writes rings the doorbell after COMMIT."""
        return self.db.write(lambda: fn(time.time()))

    def _event(
        self, kind: str, now: float, task_id: str | None = None, run_id: int | None = None, **payload: Any
    ) -> None:
        sql.add_event(self.db, kind, now, task_id, run_id, **payload)

    def _task(self, task_id: str) -> Task:
        return sql.get_task(self.db, check_task_id(task_id))

    # -- reading -----------------------------------------------------------------------------------------------------
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
            offset=offset,
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
        now = time.time()
        with self.db.read():
            counts = sql.count_by_status(self.db)
            outcomes = {
                r["outcome"]: r["n"]
                for r in self.db.rows("SELECT outcome, count(*) AS n FROM runs WHERE outcome IS NOT NULL GROUP BY 1")
            }
            oldest_ready = self.db.value("SELECT min(created_at) FROM tasks WHERE status = 'ready'")
            done_last_hour = self.db.value(
                "SELECT count(*) FROM tasks WHERE status = 'done' AND completed_at >= ?", (now - 3600,)
            )
            open_runs = self.db.value("SELECT count(*) FROM runs WHERE ended_at IS NULL")
            expired = self.db.value(
                "SELECT count(*) FROM tasks WHERE status = 'running' AND lease_expires_at < ?", (now,)
            )
            events = sql.last_event_id(self.db)
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
        }

    # -- creating ----------------------------------------------------------------------------------------------------
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
    ) -> tuple[Task, bool]:
        """Create a task. Returns (task, created); with an idempotency key already in use, the existing task and
        False."""
        title = check_title(title)
        body = check_body(body or "")
        priority = check_priority(priority)
        command = check_command(command)
        tenant = check_text(tenant, "tenant")
        idempotency_key = check_text(idempotency_key, "idempotency key")
        runtime = None if max_runtime is None else parse_duration(max_runtime, what="max-runtime")
        retries = DEFAULT_MAX_RETRIES if max_retries is None else check_retries(max_retries)
        parent_ids = list(dict.fromkeys(check_task_id(p) for p in parents))

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
            sql.insert_task(
                self.db,
                {
                    "id": task_id, "title": title, "body": body, "status": str(status), "priority": priority,
                    "tenant": task_tenant, "command": command, "idempotency_key": idempotency_key,
                    "review_required": int(review), "max_runtime_s": runtime, "max_retries": retries,
                    "created_at": now, "updated_at": now,
                },
            )
            for p in parent_tasks:
                sql.add_link(self.db, p.id, task_id, now)
            self._event(
                "created", now, task_id, title=title, status=str(status), priority=priority,
                parents=[p.id for p in parent_tasks], tenant=task_tenant,
            )
            return sql.get_task(self.db, task_id), True

        return self._write(tx)

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

    # -- dependencies ------------------------------------------------------------------------------------------------
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

    # -- claiming and leases -----------------------------------------------------------------------------------------
    def claim(
        self,
        task_id: str | None = None,
        *,
        worker: str | None = None,
        ttl: str | float = DEFAULT_LEASE_S,
        pid: int | None = None,
        pid_create_time: float | None = None,
        tenant: str | None = None,
    ) -> Claim | None:
        """Open a run on `task_id` (or on the next ready task by priority, then age). Returns None when nothing
        is ready. A running task whose lease has expired is taken over: its old run is closed as `reclaimed`.
        `ttl` is seconds or a duration string (`90s`, `5m`)."""
        lease_s = parse_duration(ttl, what="lease ttl")
        if task_id is not None:
            check_task_id(task_id)
        worker = check_text(worker, "worker")

        def tx(now: float) -> Claim | None:
            if task_id is None:
                self._reclaim_expired(now)
                claim = self._claim_ready(now, lease_s, worker, pid, pid_create_time, tenant)
                if claim is None:
                    # Roll back the reclaims too: a claim that finds nothing changes nothing (`claim` then exits 1,
                    # and a failing command never changes the board). Expired leases are reclaim_expired()'s job.
                    raise _NothingToClaim
                return claim
            else:
                task = self._task(task_id)
                if task.status == TaskStatus.RUNNING:
                    if task.lease_expires_at is not None and task.lease_expires_at >= now:
                        raise AlreadyClaimed(
                            f"task {task.id} is claimed by run {task.current_run_id} until "
                            f"{_iso(task.lease_expires_at)} (see: hermes kanban show {task.id})"
                        )
                    task = self._reclaim_one(task, now, retry=True)
                    if task.status != TaskStatus.READY:
                        raise InvalidTransition(f"task {task.id} gave up after {task.attempts} attempts and is blocked")
                elif task.status == TaskStatus.TODO:
                    raise InvalidTransition(
                        f"task {task.id} is waiting on its parents (see: hermes kanban show {task.id})"
                    )
                elif task.status != TaskStatus.READY:
                    raise InvalidTransition(f"task {task.id} is {task.status}; only ready tasks can be claimed")
            return self._open_run(task, now, lease_s, worker, pid, pid_create_time)

        try:
            return self._write(tx)
        except _NothingToClaim:
            return None

    def _claim_ready(self, now: float, ttl: float, worker: str | None, pid: int | None,
                     pid_create_time: float | None, tenant: str | None) -> Claim | None:
        """Open a run on the head of the ready queue, or None when nothing is ready. The same rows as _open_run on
        the task claimable_task_id picks (run row, task running with its lease, `claimed` event), in three
        statements: the run is inserted from the queue's head, the task update returns the attempt number."""
        expires = now + ttl
        opened = sql.open_run_on_next_ready(self.db, now, expires, worker, self._host, pid, pid_create_time, tenant)
        if opened is None:
            return None
        run_id, task_id = opened
        attempt = sql.mark_running(self.db, task_id, run_id, now, expires)
        self._event("claimed", now, task_id, run_id, attempt=attempt, worker=worker, pid=pid,
                    lease_expires_at=_iso(expires))  # JSON timestamps are ISO 8601 UTC (the CLI contract)
        return Claim(task_id=task_id, run_id=run_id, lease_expires_at=expires, attempt=attempt)

    def _open_run(
        self, task: Task, now: float, ttl: float, worker: str | None, pid: int | None, pid_create_time: float | None
    ) -> Claim:
        expires = now + ttl
        run_id = sql.insert_run(self.db, task.id, now, expires, worker, self._host, pid, pid_create_time)
        attempt = task.attempts + 1
        sql.update_task(
            self.db, task.id, now, status="running", attempts=attempt, current_run_id=run_id,
            lease_expires_at=expires, retry_at=None,
        )
        self._event("claimed", now, task.id, run_id, attempt=attempt, worker=worker, pid=pid,
                    lease_expires_at=_iso(expires))  # JSON timestamps are ISO 8601 UTC (the CLI contract)
        return Claim(task_id=task.id, run_id=run_id, lease_expires_at=expires, attempt=attempt)

    def _fenced(self, task_id: str, run_id: int, action: str) -> Task:
        """The task, provided `run_id` is its current open run; StaleRun otherwise."""
        task = self._task(task_id)
        if task.status != TaskStatus.RUNNING or task.current_run_id != run_id:
            current = f"run {task.current_run_id}" if task.status == TaskStatus.RUNNING else f"status {task.status}"
            raise StaleRun(
                f"run {run_id} is not the current run of task {task.id} ({current}); {action} refused, nothing changed"
            )
        return task

    def heartbeat(self, task_id: str, run_id: int, *, ttl: str | float = DEFAULT_LEASE_S) -> Claim:
        """Extend the lease of `run_id` (`ttl`: seconds or a duration string). Fenced: a stale run gets StaleRun."""
        lease_s = parse_duration(ttl, what="lease ttl")
        check_task_id(task_id)

        def tx(now: float) -> Claim:
            task = self._fenced(task_id, run_id, "heartbeat")
            expires = now + lease_s
            sql.update_task(self.db, task.id, now, lease_expires_at=expires)
            sql.extend_run_lease(self.db, run_id, now, expires)
            return Claim(task_id=task.id, run_id=run_id, lease_expires_at=expires, attempt=task.attempts)

        # A heartbeat extends a lease; it is not a state change, so it writes no event and rings no doorbell.
        return self.db.write(lambda: tx(time.time()))

    def set_run_process(self, run_id: int, pid: int, pid_create_time: float | None) -> None:
        """Record the worker process of a run (pid with its start time: a pid alone is never trusted)."""

        def tx(now: float) -> None:
            run = sql.get_run(self.db, run_id)
            if run is None:
                raise NotFound(f"run {run_id} not found")
            sql.set_run_process(self.db, run_id, pid, pid_create_time, self._host)
            self._event("spawned", now, run.task_id, run_id, pid=pid)

        self._write(tx)

    def reclaim_expired(self) -> list[Task]:
        """Close every run whose lease has expired; each task retries (after backoff) or gives up."""
        return self._write(self._reclaim_expired)

    def _reclaim_expired(self, now: float) -> list[Task]:
        return [self._reclaim_one(t, now, retry=True) for t in sql.expired_running(self.db, now)]

    def _reclaim_one(self, task: Task, now: float, *, retry: bool) -> Task:
        run_id = task.current_run_id
        assert run_id is not None
        sql.close_run(self.db, run_id, str(RunOutcome.RECLAIMED), now, "lease expired")
        self._event("reclaimed", now, task.id, run_id, reason="lease expired", attempt=task.attempts)
        return self._after_failure(task, now, RunOutcome.RECLAIMED, retry_at=now if retry else None)

    def _after_failure(self, task: Task, now: float, outcome: RunOutcome, *, retry_at: float | None,
                       give_up: bool = False) -> Task:
        if give_up or task.attempts > task.max_retries:
            sql.update_task(self.db, task.id, now, status="blocked", current_run_id=None, lease_expires_at=None,
                            retry_at=None)
            self._event("gave_up", now, task.id, task.current_run_id, attempts=task.attempts, last_outcome=str(outcome))
        else:
            status = "todo" if sql.unfinished_parent_count(self.db, task.id) else "ready"
            sql.update_task(self.db, task.id, now, status=status, current_run_id=None, lease_expires_at=None,
                            retry_at=retry_at)
        return sql.get_task(self.db, task.id)

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

    # -- finishing ---------------------------------------------------------------------------------------------------
    def complete(
        self,
        task_id: str,
        run_id: int | None = None,
        *,
        summary: str | None = None,
        force: bool = False,
        exit_code: int | None = None,
    ) -> Task:
        """Finish a task: `done` (children promoted), or `review` when the task is review-gated.

        With `run_id` (a worker): fenced. Repeating a completion that already landed for the same run is a no-op.
        Without (a person): ready or blocked tasks only; a running task needs `force`, which closes the live run.
        """
        check_task_id(task_id)
        return self._write(lambda now: self._complete(task_id, run_id, now, summary, force, exit_code))

    def _complete(self, task_id: str, run_id: int | None, now: float, summary: str | None, force: bool,
                  exit_code: int | None) -> Task:
        if run_id is not None:
            # The common case in one statement: the fenced UPDATE matches only while run_id is the task's current
            # run of a task without a review gate. Anything else changed nothing and takes the careful path below,
            # which decides between a repeat (no-op), review, and StaleRun exactly as before.
            done = sql.complete_current_run(self.db, task_id, run_id, now, summary)
            if done is not None:
                sql.close_run(self.db, run_id, str(RunOutcome.COMPLETED), now, summary, exit_code)
                self._event("completed", now, task_id, run_id, summary=summary, title=done.title, forced=force or None)
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
        return self._finish_complete(task, closing, now, summary, exit_code=exit_code, forced=force or None)

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
            task = self._complete(task_id, run_id, now, summary, False, exit_code)
            expired = sql.expired_running(self.db, now)
            if not expired:
                return task, self._claim_ready(now, lease_s, worker, pid, pid_create_time, tenant)
            self.db.execute("SAVEPOINT claim_next")
            for t in expired:
                self._reclaim_one(t, now, retry=True)
            claim = self._claim_ready(now, lease_s, worker, pid, pid_create_time, tenant)
            if claim is None:
                self.db.execute("ROLLBACK TO claim_next")
            self.db.execute("RELEASE claim_next")
            return task, claim

        return self._write(tx)

    # The effects of complete and block, shared with reconcile (a spooled report applies exactly what the command
    # would have done). Callers have validated the transition and hold the write transaction. `closing` is the open
    # run to close (None when there is none); the event names `event_run_id` when given (reconcile: the reporting
    # run of a late report, already closed), else the closed run.
    def _finish_complete(self, task: Task, closing: int | None, now: float, summary: str | None, *,
                         exit_code: int | None = None, event_run_id: int | None = None, **event_extra: Any) -> Task:
        """`review` for a review-gated task, else `done` with children promoted."""
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
                      event_run_id: int | None = None, **event_extra: Any) -> Task:
        if closing is not None:
            sql.close_run(self.db, closing, str(RunOutcome.BLOCKED), now, reason)
        sql.update_task(self.db, task.id, now, status="blocked", current_run_id=None, lease_expires_at=None,
                        retry_at=None)
        self._event("blocked", now, task.id, closing if event_run_id is None else event_run_id, reason=reason,
                    title=task.title, **event_extra)
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
                       force: bool = False) -> Task:
        check_task_id(task_id)

        def tx(now: float) -> Task:
            task = self._task(task_id)
            if run_id is not None:
                if self._already_finished(task, run_id, (RunOutcome.REVIEW_REQUESTED,)):
                    return task
                self._fenced(task_id, run_id, "request-review")
                closing: int | None = run_id
            else:
                closing = self._closable_without_run(task, force, "request-review")
            return self._to_review(task, closing, now, summary)

        return self._write(tx)

    def block(self, task_id: str, run_id: int | None = None, *, reason: str | None = None, force: bool = False) -> Task:
        check_task_id(task_id)
        reason = (reason or "").strip() or None

        def tx(now: float) -> Task:
            task = self._task(task_id)
            if run_id is not None:
                if self._already_finished(task, run_id, (RunOutcome.BLOCKED,)):
                    return task
                self._fenced(task_id, run_id, "block")
                closing: int | None = run_id
            else:
                closing = self._closable_without_run(task, force, "block")
            return self._finish_block(task, closing, now, reason)

        return self._write(tx)

    def unblock(self, task_id: str, *, reason: str | None = None) -> Task:
        """blocked -> ready (or todo while parents are unfinished), with a fresh retry budget."""
        check_task_id(task_id)
        reason = check_text(reason, "reason", limit=2000)

        def tx(now: float) -> Task:
            task = self._task(task_id)
            if task.status != TaskStatus.BLOCKED:
                raise InvalidTransition(f"cannot unblock task {task.id}: it is {task.status}, not blocked")
            status = "todo" if sql.unfinished_parent_count(self.db, task.id) else "ready"
            sql.update_task(self.db, task.id, now, status=status, attempts=0, retry_at=None)
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
            status = "todo" if sql.unfinished_parent_count(self.db, task.id) else "ready"
            sql.update_task(self.db, task.id, now, status=status, attempts=0, retry_at=None)
            sql.insert_comment(self.db, task.id, "review", reason, now)
            self._event("changes_requested", now, task.id, reason=reason, status=status)
            return sql.get_task(self.db, task.id)

        return self._write(tx)

    def archive(self, task_id: str) -> Task:
        """Put a task away. A live run is closed (its worker's later writes are fenced off); children waiting on
        it are released, as archived parents count as finished."""
        check_task_id(task_id)

        def tx(now: float) -> Task:
            task = self._task(task_id)
            if task.status == TaskStatus.ARCHIVED:
                raise InvalidTransition(f"task {task.id} is already archived")
            if task.current_run_id is not None and task.status == TaskStatus.RUNNING:
                sql.close_run(self.db, task.current_run_id, str(RunOutcome.RECLAIMED), now, "archived")
            sql.update_task(self.db, task.id, now, status="archived", current_run_id=None, lease_expires_at=None,
                            retry_at=None)
            self._event("archived", now, task.id, previous=str(task.status))
            self._promote_children(task.id, now)
            return sql.get_task(self.db, task.id)

        return self._write(tx)

    # -- helpers for the dispatcher ----------------------------------------------------------------------------------
    def open_runs(self) -> list[Any]:
        return sql.open_runs(self.db)

    def next_retry_at(self) -> float | None:
        return sql.next_retry_at(self.db)


def _iso(ts: float) -> str:
    return iso(ts) or ""
