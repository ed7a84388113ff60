"""Claims and leases: claim (fencing: a run id per claim), heartbeat, expiry and reclaim, retries, assignment. Part of
Board (domain/board.py)."""

from __future__ import annotations

from ..core.errors import AlreadyClaimed, InvalidTransition, NotFound, StaleRun
from ..core.models import Claim, RunOutcome, Task, TaskStatus
from ..core.values import (
    check_profile,
    check_task_id,
    check_text,
    parse_duration,
)
from ..store import tasks as sql
from .board_core import (
    DEFAULT_LEASE_S,
    BoardCore,
    NothingToClaim,
    iso_text,
)


class Claims(BoardCore):
    """Claims and leases: claim (fencing: a run id per claim), heartbeat, expiry and reclaim, retries, assignment."""

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
                # Expired leases are reclaimed first (a reclaimed task may be the better head); the claim's own
                # statement checks that there are none, so the common case needs no probe of its own.
                claim = self._claim_ready(now, lease_s, worker, pid, pid_create_time, tenant, unless_expired=True)
                if claim is None and self._reclaim_expired(now):
                    claim = self._claim_ready(now, lease_s, worker, pid, pid_create_time, tenant)
                if claim is None:
                    # Roll back the reclaims too: a claim that finds nothing changes nothing (`claim` then exits 1,
                    # and a failing command never changes the board). Expired leases are reclaim_expired()'s job.
                    raise NothingToClaim
                return claim
            else:
                task = self._task(task_id)
                if task.status == TaskStatus.RUNNING:
                    if task.lease_expires_at is not None and task.lease_expires_at >= now:
                        raise AlreadyClaimed(
                            f"task {task.id} is claimed by run {task.current_run_id} until "
                            f"{iso_text(task.lease_expires_at)} (see: hermes kanban show {task.id})"
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
                elif task.attempts == 0 and task.retry_at is not None and task.retry_at > now:
                    # never run, yet not before a time: `create --scheduled-at` (a retry's backoff follows an attempt)
                    raise InvalidTransition(f"task {task.id} is scheduled to start at {iso_text(task.retry_at)}; "
                                            "wait for it, or create it again without --scheduled-at")
            return self._open_run(task, now, lease_s, worker, pid, pid_create_time)

        try:
            return self._write(tx)
        except NothingToClaim:
            return None

    def _claim_ready(self, now: float, ttl: float, worker: str | None, pid: int | None,
                     pid_create_time: float | None, tenant: str | None, *,
                     unless_expired: bool = False) -> Claim | None:
        """Open a run on the head of the ready queue, or None when nothing is ready (with `unless_expired`: also
        None while an expired lease waits to be reclaimed). The same rows as _open_run on the task
        claimable_task_id picks (run row, task running with its lease, `claimed` event), in fewer statements."""
        expires = now + ttl
        opened = sql.claim_next_ready(self.db, now, expires, worker, self._host, pid, pid_create_time, tenant,
                                      unless_expired=unless_expired)
        if opened is None:
            return None
        run_id, task_id, attempt = opened
        self._event("claimed", now, task_id, run_id, attempt=attempt, worker=worker, pid=pid,
                    lease_expires_at=iso_text(expires))  # JSON timestamps are ISO 8601 UTC (the CLI contract)
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
                    lease_expires_at=iso_text(expires))  # JSON timestamps are ISO 8601 UTC (the CLI contract)
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
        return self.db.write(lambda: tx(self.db.clock()))

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
            status = self._todo_or_ready(task.id)
            sql.update_task(self.db, task.id, now, status=status, current_run_id=None, lease_expires_at=None,
                            retry_at=retry_at)
        return sql.get_task(self.db, task.id)

    def note_not_startable(self, task_id: str, assignee: str, reason: str) -> bool:
        """Record that the dispatcher does not start a ready task (event `skipped_nonspawnable`, hermes-agent's name),
        once: nothing is written while the task's latest event is already that note for the same assignee, so a
        dispatcher scanning every few seconds (or a pass from cron every minute) does not flood the log. Returns
        whether the event was written."""

        def noted() -> bool:
            last = sql.events_after(self.db, 0, task_id=task_id, limit=1, newest_first=True)
            return bool(last) and last[0].kind == "skipped_nonspawnable" and last[0].payload.get("assignee") == assignee

        if noted():  # a read first: the common case (noted already) never takes the write lock
            return False

        def tx(now: float) -> bool:
            task = sql.get_task(self.db, task_id)
            if task.status != TaskStatus.READY or task.command or task.assignee != assignee or noted():
                return False  # changed meanwhile: the next scan judges it anew
            self._event("skipped_nonspawnable", now, task.id, assignee=assignee, reason=reason)
            return True

        return self._write(tx)

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
        status = self._todo_or_ready(task.id)
        sql.update_task(self.db, task.id, now, status=status, current_run_id=None, lease_expires_at=None,
                        retry_at=None, attempts=0)
        self._event("reclaimed", now, task.id, run_id, reason=why, manual=True, status=status)
        return sql.get_task(self.db, task.id)
