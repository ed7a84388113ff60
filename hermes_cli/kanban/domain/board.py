"""The public API of one board: every state change the CLI, the dispatcher, the TUI and the tests make.

Each method validates its input first, then makes its change and writes its event in one IMMEDIATE transaction,
then rings the doorbell. A failing check raises a HermesError from inside the transaction, which rolls back: bad
input never changes the board.

Fencing: a claim opens a run whose id is the fencing token. heartbeat/complete/block/request_review with a run id
succeed only while that run is the task's current open run (`tasks.current_run_id`, status `running`); anything
else raises StaleRun (exit 3) and changes nothing.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ..core.errors import AlreadyClaimed, CycleRefused, InvalidTransition, InvalidValue, NotFound, StaleRun
from ..core.models import Claim, Comment, Event, RunOutcome, Task, TaskDetail, TaskStatus, iso
from ..core.paths import DEFAULT_BOARD, BoardPaths, current_board, resolve
from ..core.values import (
    INITIAL_STATUSES,
    check_block_kind,
    check_body,
    check_command,
    check_metadata,
    check_priority,
    check_profile,
    check_report_text,
    check_retries,
    check_task_id,
    check_text,
    check_title,
    parse_duration,
)
from ..live import doorbell
from ..store import stats as stats_sql
from ..store import tasks as sql
from ..store.connection import Database
from ..store.opening import connect
from ..store.schema import migrate

T = TypeVar("T")

#: lease of a claim when the caller does not say (seconds); workers heartbeat well within it
DEFAULT_LEASE_S = 120.0
DEFAULT_MAX_RETRIES = 3
#: backoff before retry n is BACKOFF_BASE_S * 2**(n-1), jittered +-25%, capped
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
#: board settings kept in the board itself (`boards create --name ...`, `boards rename`)
BOARD_SETTINGS = ("name", "description", "icon", "color", "default_workdir")
SORTS = ("priority", "age", "newest", "updated", *sql.EXTRA_SORTS)


def retry_delay(attempt: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Exponential backoff with jitter for the retry after failed attempt number `attempt` (1-based)."""
    raw = min(cap, base * 2 ** max(0, attempt - 1))
    return raw * random.uniform(0.75, 1.25)


def ring_doorbell_after_commit(db: Database) -> None:
    """Install the doorbell ring as `db`'s after-commit hook: every write that inserted an event rings the board's
    doorbell after its COMMIT (the store itself never imports the notification layer)."""
    notify_dir = db.paths.notify_dir  # computed once: BoardPaths.notify_dir builds a new Path each call
    # Through the module attribute at ring time, so a wrapped doorbell.ring (tests/notify/delivery_writer.py) is used.
    db.on_event_commit(lambda: doorbell.ring(notify_dir))


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
            if board is None and db_path is None and not os.environ.get("HERMES_KANBAN_BOARD") \
                    and current_board() == paths.slug:
                raise NotFound(f"board {paths.slug}, chosen with boards switch, does not exist (see: hermes kanban "
                               "boards switch default)")
            raise NotFound(f"board {paths.slug} does not exist (see: hermes kanban boards create {paths.slug})")
        db = connect(paths, create=create, vfs=vfs)
        ring_doorbell_after_commit(db)
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

    @property
    def created(self) -> bool:
        """Whether this open created the board (its database file did not exist)."""
        return self.db.created

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
        now = time.time()
        with self.db.read():
            counts = sql.count_by_status(self.db)
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
        assignee: str | None = None,
        created_by: str | None = None,
        skills: Sequence[str] = (),
        triage: bool = False,
        initial_status: str | None = None,
    ) -> tuple[Task, bool]:
        """Create a task. Returns (task, created); with an idempotency key already in use, the existing task and
        False.

        `assignee` is the profile that works on it; `created_by` and `skills` are stored for people and workers.
        `triage` parks it in `triage` (until `promote`); `initial_status="blocked"` creates it blocked (hermes-agent's
        `--initial-status blocked`); "running" means the usual: ready, or todo while a parent is unfinished."""
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
                },
            )
            for p in parent_tasks:
                sql.add_link(self.db, p.id, task_id, now)
            who: dict[str, Any] = {k: v for k, v in (("assignee", assignee), ("created_by", created_by)) if v}
            self._event(
                "created", now, task_id, title=title, status=str(status), priority=priority,
                parents=[p.id for p in parent_tasks], tenant=task_tenant, **who,
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

    def heartbeat(self, task_id: str, run_id: int, *, ttl: str | float = DEFAULT_LEASE_S,
                  note: str | None = None) -> Claim:
        """Extend the lease of `run_id` (`ttl`: seconds or a duration string). Fenced: a stale run gets StaleRun.
        A `note` (a worker's progress line) is kept as a `heartbeat` event."""
        lease_s = parse_duration(ttl, what="lease ttl")
        check_task_id(task_id)
        note = check_text(note, "heartbeat note", limit=2000)

        def tx(now: float) -> Claim:
            task = self._fenced(task_id, run_id, "heartbeat")
            expires = now + lease_s
            sql.update_task(self.db, task.id, now, lease_expires_at=expires)
            sql.extend_run_lease(self.db, run_id, now, expires)
            if note is not None:
                self._event("heartbeat", now, task.id, run_id, note=note)
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
        return self._write(lambda now: self._complete_one(task_id, run_id, now, summary=summary, force=force,
                                                          exit_code=exit_code, result=result, metadata=meta))

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
            expired = sql.expired_running(self.db, now)
            if not expired:
                return task, self._claim_ready(now, lease_s, worker, pid, pid_create_time, tenant)
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
            status = "todo" if sql.unfinished_parent_count(self.db, task.id) else "ready"
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
        return self._write(lambda now: self._archive_one(self._task(task_id), now))

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

    # -- hermes-agent vocabulary: assignees, reclaim, promote, edit, delete, views, gc ------------------------------
    def assign(self, task_id: str, profile: str | None) -> Task:
        """Set (or with None clear) the profile that works on a task. A running task keeps its worker: reassign
        it with `reassign --reclaim`."""
        check_task_id(task_id)
        profile = check_profile(profile)
        return self._write(lambda now: self._assign_one(self._task(task_id), profile, now, reclaim=False, reason=None))

    def reassign(self, task_id: str, profile: str | None, *, reclaim: bool = False, reason: str | None = None) -> Task:
        """assign, and with `reclaim` first free a running task (its worker's reports are then refused)."""
        check_task_id(task_id)
        profile = check_profile(profile)
        reason = check_text(reason, "reason", limit=2000)
        return self._write(lambda now: self._assign_one(self._task(task_id), profile, now, reclaim=reclaim,
                                                        reason=reason))

    def _assign_one(self, task: Task, profile: str | None, now: float, *, reclaim: bool,
                    reason: str | None) -> Task:
        if task.status == TaskStatus.ARCHIVED:
            raise InvalidTransition(f"cannot assign task {task.id}: it is archived")
        if task.status == TaskStatus.RUNNING:
            if not reclaim:
                raise AlreadyClaimed(
                    f"task {task.id} is running (run {task.current_run_id}); to move it to "
                    f"{profile or 'nobody'} free it first: hermes kanban reassign {task.id} {profile or 'none'} "
                    "--reclaim"
                )
            task = self._reclaim_manual(task, now, reason)
        if task.assignee == profile:
            return task
        sql.update_task(self.db, task.id, now, assignee=profile)
        self._event("assigned", now, task.id, assignee=profile, previous=task.assignee, reason=reason)
        return sql.get_task(self.db, task.id)

    def reclaim(self, task_id: str, *, reason: str | None = None) -> Task:
        """An operator frees a running task: its run is closed as `reclaimed` (the worker's later reports are
        fenced off, and a dispatcher supervising it stops it), the task is ready again (todo while a parent is
        open) with a fresh retry budget."""
        check_task_id(task_id)
        reason = check_text(reason, "reason", limit=2000)

        def tx(now: float) -> Task:
            task = self._task(task_id)
            if task.status != TaskStatus.RUNNING:
                raise InvalidTransition(f"cannot reclaim task {task.id}: it is {task.status}, not running")
            return self._reclaim_manual(task, now, reason)

        return self._write(tx)

    def _reclaim_manual(self, task: Task, now: float, reason: str | None) -> Task:
        run_id = task.current_run_id
        why = reason or "reclaimed by an operator"
        if run_id is not None:
            sql.close_run(self.db, run_id, str(RunOutcome.RECLAIMED), now, why)
        status = "todo" if sql.unfinished_parent_count(self.db, task.id) else "ready"
        sql.update_task(self.db, task.id, now, status=status, current_run_id=None, lease_expires_at=None,
                        retry_at=None, attempts=0)
        self._event("reclaimed", now, task.id, run_id, reason=why, manual=True, status=status)
        return sql.get_task(self.db, task.id)

    def assignees(self) -> list[dict[str, Any]]:
        """Every assignee with its task counts by status (archived tasks not counted); unassigned tasks last, as
        name None."""
        by: dict[str | None, dict[str, int]] = {}
        for r in sql.count_by_assignee(self.db):
            by.setdefault(r["assignee"], {})[r["status"]] = r["n"]
        return [{"name": name, "counts": counts, "total": sum(counts.values())} for name, counts in by.items()]

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

    def archive_many(self, task_ids: Sequence[str]) -> list[Task]:
        """archive for several tasks in one transaction: all of them, or none."""
        ids = list(dict.fromkeys(check_task_id(t) for t in task_ids))
        return self._write(lambda now: [self._archive_one(self._task(t), now) for t in ids])

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
        env = {
            "HERMES_KANBAN_DB": str(self.paths.db),
            "HERMES_KANBAN_BOARD": self.slug,
            "HERMES_KANBAN_TASK": task.id,
            "HERMES_KANBAN_RUN_ID": str(task.current_run_id) if task.current_run_id else None,
            # where the dispatcher runs a worker today (spawn.workspace_for); not created by looking
            "HERMES_KANBAN_WORKSPACE": str(self.paths.workspaces_dir / task.id),
        }
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

    def gc(self, *, event_retention_days: float = 30, log_retention_days: float = 30) -> dict[str, Any]:
        """Delete events older than N days of finished (done, archived, deleted) tasks, and worker logs not
        written for N days of tasks that are not running. Never an event a subscription has not consumed."""
        for name, days in (("event-retention-days", event_retention_days), ("log-retention-days",
                                                                            log_retention_days)):
            if isinstance(days, bool) or not 0 <= days <= 36500:
                raise InvalidValue(f"invalid --{name} {days!r}: use a number of days from 0 to 36500")
        now = time.time()

        def tx(now_: float) -> tuple[int, int | None]:
            cursor = sql.min_subscription_cursor(self.db)
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

    # -- board settings (the `meta` table) ---------------------------------------------------------------------------
    def settings(self) -> dict[str, str | None]:
        with self.db.read():
            return {k: sql.meta_get(self.db, k) for k in BOARD_SETTINGS}

    def set_settings(self, **values: str | None) -> dict[str, str | None]:
        """Set board settings (name, description, icon, color, default_workdir); None clears one."""
        for k, v in values.items():
            if k not in BOARD_SETTINGS:
                raise InvalidValue(f"unknown board setting {k!r}: use one of {', '.join(BOARD_SETTINGS)}")
            if v is not None:
                check_text(v, k.replace("_", "-"), limit=4096 if k == "default_workdir" else 500)

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

    # -- helpers for the dispatcher ----------------------------------------------------------------------------------
    def open_runs(self) -> list[Any]:
        return sql.open_runs(self.db)

    def next_retry_at(self) -> float | None:
        return sql.next_retry_at(self.db)


def _iso(ts: float) -> str:
    return iso(ts) or ""
