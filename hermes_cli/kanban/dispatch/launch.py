"""Launching: claim ready tasks and start their workers, up to max_spawn running at once.

The claim is made in the same transaction that checks this dispatcher still holds the lease, so a dispatcher that
lost it starts nothing. A worker that cannot be started is a failed attempt (closed like a crash, so retries with
backoff and max_retries bound a spawn loop); the dispatcher never dies over one task. spawn.py is how one worker
process is started per the worker contract.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..core import procs
from ..core.errors import BoardBusy, HermesError, NotFound
from ..core.models import Claim, RunOutcome, Task
from ..domain.board import Board
from ..domain.config import DispatchSettings
from ..store import tasks as tsql
from . import fleet, spawn, workspaces
from . import lease as leases
from .reaping import Reaper
from .result import DispatchResult
from .selection import Selection
from .workers import LEFT_RUNNING, Crew, Worker


class Launcher:
    """Claims ready tasks for this dispatcher and starts their workers under the crew's supervision."""

    def __init__(self, board: Board, settings: DispatchSettings, result: DispatchResult, crew: Crew, reaper: Reaper,
                 *, env: Mapping[str, str], worker_name: str, log: Callable[[str], None],
                 record_started: bool = False, watch: bool = False) -> None:
        self.board = board
        self.s = settings
        self.result = result
        self.crew = crew
        self.reaper = reaper
        self.env = env
        self.worker_name = worker_name
        self.log = log
        #: list each started worker in result.started (one pass: what `dispatch --json` prints)
        self.record_started = record_started
        #: start each worker under a watcher (watch.py), which supervises it once this dispatcher is gone (one pass)
        self.watch = watch
        #: which ready tasks can be started, and with which command (shared with `dispatch --dry-run`)
        self.selection = Selection(settings)
        #: our registration on a PostgreSQL board (fleet.py): claims are fenced by it instead of the board lease
        self.fleet_id: int | None = None

    def fill(self, epoch: int, *, limit: int | None = None) -> None:
        """Start workers for ready tasks while fewer than max_spawn run, at most `limit` of them (None: no limit);
        `epoch` is the lease the claims are fenced by."""
        budget = max(0, self.s.max_spawn - len(self.crew.workers))
        if limit is not None:
            budget = min(budget, limit)
        for _ in range(budget):
            # A read first: a wake-up with nothing to start takes no write lock (and never waits for one). A hint
            # only (this host's clock, no round trip for the server's): the claim checks again by the board's clock.
            if not self.selection.dispatchable(self.board.db, time.time(), limit=1):
                return
            got = self._claim_next(epoch)
            if got is None:
                return
            self._spawn(*got)

    def note_unstartable(self) -> None:
        """Ready tasks whose assignee has no profile command are never started with another command: each gets one
        `skipped_nonspawnable` event saying why (Board.note_not_startable writes it once), and stays ready for pull
        workers. A pass lists them all in `skipped_nonspawnable`; a daemon those it noted."""
        config = str(self.board.paths.config_file)
        for task_id, assignee in self.selection.unstartable(self.board.db):
            reason = self.selection.skip_reason(assignee, config)
            try:
                written = self.board.note_not_startable(task_id, assignee, reason)
            except NotFound:
                continue  # deleted since the read: nothing to say about it
            if written:
                self.log(f"{task_id}: not started: {reason}")
            if written or self.record_started:
                self.result.skipped_nonspawnable.append({"task_id": task_id, "assignee": assignee, "reason": reason})

    def _claim_next(self, epoch: int) -> tuple[Claim, Task, str | None, dict[str, Any] | None] | None:
        board = self.board

        def tx() -> tuple[Claim, Task, str | None, dict[str, Any] | None] | None:
            if self.fleet_id is not None:
                fleet.check_registered(board, self.fleet_id)  # a dispatcher whose registration lapsed starts nothing
            else:
                leases.check_held(board, epoch)  # fenced by our lease: a dispatcher that lost it starts nothing
            # Board-wide, counted in this transaction: every host's dispatcher (and pull worker) is counted.
            if fleet.at_limit(board, self.s.max_running):
                return None
            # The per-assignee limits ([profiles.<name>] max_running) likewise: the queue read leaves out the tasks
            # of an assignee that runs its limit already, counted here, in the transaction that claims.
            ids = self.selection.dispatchable(board.db, board.db.clock(), limit=1)
            if not ids:
                return None
            claim = board.claim(ids[0], worker=self.worker_name, ttl=self.s.worker_ttl)
            assert claim is not None  # a specific ready task in our own transaction is always claimable
            if self.fleet_id is not None:
                fleet.own_run(board, claim.run_id, self.fleet_id)
            # What the worker's start needs from the board, read here rather than in a transaction of its own
            # after the claim: two round trips fewer between a task becoming ready and its worker's exec.
            workdir = tsql.meta_get(board.db, "default_workdir")
            return claim, tsql.get_task(board.db, claim.task_id), workdir, board.model_override(claim.task_id)

        return board.db.write(tx)

    def _spawn(self, claim: Claim, task: Task, workdir: str | None, model: dict[str, Any] | None) -> None:
        command = self.selection.command_for(task)
        assert command is not None  # dispatchable() only returns tasks that have a command
        max_runtime = task.max_runtime_s or self.s.max_runtime_default
        watch = None
        if self.watch:
            watch = spawn.Watch(attempt=claim.attempt, max_runtime=max_runtime, settings={
                "worker_ttl": self.s.worker_ttl, "kill_grace": self.s.kill_grace, "linger": self.s.linger,
                "failure_limit": self.s.failure_limit})
        try:
            where = workspaces.prepare(self.board.paths, task, workdir)
            started = spawn.start(
                self.board.paths, command=command, task_id=task.id, run_id=claim.run_id, title=task.title,
                attempt=claim.attempt, env_base=self.env, max_bytes=self.s.log_max_bytes,
                backups=self.s.log_backups, profile=task.assignee, workspace=where.path, branch=where.branch,
                model=model, watch=watch,
            )
        except (OSError, ValueError, subprocess.SubprocessError, HermesError) as exc:
            # No such program, not executable, a bad command line, a workspace that cannot be made (workspaces.py),
            # an argument Popen refuses (ValueError: a NUL
            # byte from a board written before `create` refused them, or from a default command), a symlink where
            # the workspace or log should be: the attempt fails like a crash, so the run is closed and retries
            # (with backoff) and max_retries bound a spawn loop; the dispatcher never dies over one task.
            self.result.counts["spawn_failed"] += 1
            reason = exc.message if isinstance(exc, HermesError) else f"{exc.__class__.__name__}: {exc}"
            self.reaper.record(task.id, claim.run_id, claim.attempt, RunOutcome.CRASHED, f"spawn failed: {reason}",
                               None, keep=True)
            return
        pid = started.pid
        now = time.time()
        w = Worker(
            task_id=task.id, run_id=claim.run_id, pid=pid, attempt=claim.attempt, started_at=now,
            create_time=procs.create_time(pid) if started.watcher is None else started.create_time,
            deadline=None if max_runtime is None else now + max_runtime, max_runtime=max_runtime,
            log=started.log,
        )
        if started.watcher is None:
            w.popen, w.pidfd = started.popen, procs.pidfd(pid)
        else:
            # Its watcher is our child, the worker is not: we wake when the watcher exits (after recording the run)
            w.watcher, w.launched, w.pidfd = started.watcher, True, procs.pidfd(started.watcher)
            LEFT_RUNNING.append(started.popen)  # referenced, so no finalizer warns that it still runs
        self.crew.supervise(w)
        self.result.counts["spawned"] += 1
        if self.record_started:
            self.result.started.append({"task_id": task.id, "run_id": claim.run_id, "pid": pid,
                                        "attempt": claim.attempt, "assignee": task.assignee,
                                        "argv": list(started.argv), "workspace": str(started.workspace),
                                        "watcher": started.watcher})
        under = "" if started.watcher is None else f" (watcher pid {started.watcher})"
        self.log(f"spawned {task.id} run {claim.run_id} attempt {claim.attempt} pid {pid}{under}: "
                 f"{shlex.join(started.argv)}")
        try:
            self.board.set_run_process(claim.run_id, pid, w.create_time)
        except BoardBusy as exc:
            # The worker runs and is supervised; only its pid is missing from the board (lease expiry still rules).
            self.log(f"warning: could not record pid {pid} of run {claim.run_id}: {exc.message}")
