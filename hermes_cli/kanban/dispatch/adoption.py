"""Runs this dispatcher does not supervise: adopt the live ones, close the dead ones.

Every poll interval the dispatcher looks at the open runs it does not supervise. A run recorded on this host with a
(pid, start time) that is no longer alive is closed as crashed now; a live one is adopted (supervised, its lease
extended, its max_runtime enforced). Runs without a verifiable process are left to lease expiry, which is the final
truth. A run claimed by an earlier dispatcher of this host that died before recording its worker's pid is looked up
by the worker's environment.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..core import procs
from ..core.errors import NotFound, StaleRun
from ..core.models import Run, RunOutcome, Task, TaskStatus
from ..domain.board import Board
from ..domain.config import DispatchSettings
from . import spawn
from .reaping import Reaper
from .result import DispatchResult
from .wakeups import close_fd
from .workers import Crew, Worker

#: a run claimed by another dispatcher on this host gets this long to have its worker's pid recorded
UNRECORDED_GRACE_S = 5.0


class Adopter:
    """Scans the open runs the crew does not supervise (see the module docstring)."""

    def __init__(self, board: Board, settings: DispatchSettings, result: DispatchResult, crew: Crew, reaper: Reaper,
                 *, worker_name: str, log: Callable[[str], None]) -> None:
        self.board = board
        self.s = settings
        self.result = result
        self.crew = crew
        self.reaper = reaper
        self.worker_name = worker_name
        self.log = log
        #: in a fleet (fleet.py): the open runs of the other registered dispatchers, never ours to adopt or judge
        self.foreign: Callable[[], set[int]] | None = None

    def scan_runs(self) -> None:
        foreign = self.foreign() if self.foreign is not None else set()
        for run in self.board.open_runs():
            if run.id in self.crew.workers or run.id in foreign:
                continue
            if run.host == procs.HOST and run.pid is None and self._recover_unrecorded(run):
                continue
            if run.host != procs.HOST or run.pid is None or run.pid_create_time is None:
                continue  # nothing to verify here: lease expiry decides
            watcher = spawn.watcher_of(self.board.paths, run.id)
            if watcher is not None:
                self._adopt_watched(run, watcher)
                continue
            state = procs.state(run.pid, run.pid_create_time)
            if state == procs.ProcState.DEAD:
                task = self._task_or_none(run.task_id)
                attempt = task.attempts if task is not None else 0
                self.reaper.record(run.task_id, run.id, attempt, RunOutcome.CRASHED,
                                   f"worker pid {run.pid} is gone (no process with that pid and start time); "
                                   "exit status unknown", None)
                continue
            task = self._task_or_none(run.task_id)
            if task is None or task.status != TaskStatus.RUNNING or task.current_run_id != run.id:
                continue
            fd = procs.pidfd(run.pid)
            try:
                if procs.state(run.pid, run.pid_create_time) == procs.ProcState.DEAD:  # exited while we opened it
                    close_fd(fd)
                    continue
                if state == procs.ProcState.ALIVE:
                    try:
                        self.board.heartbeat(task.id, run.id, ttl=self.s.worker_ttl)
                    except (StaleRun, NotFound):  # closed meanwhile (its report, or a reclaim): nothing to adopt
                        close_fd(fd)
                        continue
                max_runtime = task.max_runtime_s or self.s.max_runtime_default
                w = Worker(
                    task_id=task.id, run_id=run.id, pid=run.pid, create_time=run.pid_create_time,
                    attempt=task.attempts, started_at=run.started_at,
                    deadline=None if max_runtime is None else run.started_at + max_runtime, max_runtime=max_runtime,
                    pidfd=fd, log=spawn.log_path(self.board.paths, task.id),
                )
            except BaseException:
                # The heartbeat met a busy or failing board (the loop tries again on the next scan), or a signal
                # arrived: the fd is not supervised yet, so nothing else would ever close it.
                close_fd(fd)
                raise
            self.crew.supervise(w)  # from here on, Crew.unsupervise closes the fd
            self.result.counts["adopted"] += 1
            self.log(f"adopted {task.id} run {run.id} pid {run.pid} ({state}), left by an earlier dispatcher")

    def _adopt_watched(self, run: Run, watcher: int) -> None:
        """A worker under a live watcher (started by a one-pass dispatch): counted against max_spawn and listed, but
        its lease, max runtime and end are its watcher's (Worker.watcher); we take it over only if the watcher dies
        (reaping.py)."""
        assert run.pid is not None
        task = self._task_or_none(run.task_id)
        if task is None or task.status != TaskStatus.RUNNING or task.current_run_id != run.id:
            return
        max_runtime = task.max_runtime_s or self.s.max_runtime_default
        w = Worker(
            task_id=task.id, run_id=run.id, pid=run.pid, create_time=run.pid_create_time, attempt=task.attempts,
            started_at=run.started_at, deadline=None if max_runtime is None else run.started_at + max_runtime,
            max_runtime=max_runtime, log=spawn.log_path(self.board.paths, task.id), watcher=watcher,
            # we wake when the watcher exits (it has recorded the run then); 0: its pid unknown, polled instead
            pidfd=procs.pidfd(watcher) if watcher else -1,
        )
        self.crew.supervise(w)
        self.result.counts["adopted"] += 1
        self.log(f"adopted {task.id} run {run.id} pid {run.pid} under its watcher (pid {watcher}), left by an "
                 "earlier dispatcher")

    def _recover_unrecorded(self, run: Run) -> bool:
        """A run claimed by an earlier dispatcher on this host that died before recording its worker's pid: find
        the worker by its environment and record it (it is adopted on the next scan), or, if no process carries
        the run's token, close the run now instead of waiting for its lease. Runs of pull workers (claimed by
        something other than a dispatcher) are left alone. Returns whether the run was dealt with."""
        prefix = f"dispatcher@{procs.HOST}:"
        if not (run.worker or "").startswith(prefix) or run.worker == self.worker_name:
            return False
        if time.time() - run.started_at < UNRECORDED_GRACE_S:
            return True  # its dispatcher may still be about to record it; look again on a later scan
        if spawn.watcher_of(self.board.paths, run.id) is not None:
            return True  # started under a watcher, which records the worker's pid itself
        found = procs.find_worker(run.id, str(self.board.paths.db))
        if found is not None:
            pid, started = found
            self.log(f"found the worker of {run.task_id} run {run.id} (pid {pid}) by its environment")
            self.board.set_run_process(run.id, pid, started)
            return True
        task = self._task_or_none(run.task_id)
        self.reaper.record(run.task_id, run.id, task.attempts if task is not None else 0, RunOutcome.CRASHED,
                           "its dispatcher stopped before the worker was started or recorded, and no process "
                           "carries the run's token", None)
        return True

    def _task_or_none(self, task_id: str) -> Task | None:
        try:
            return self.board.get_task(task_id)
        except NotFound:
            return None
