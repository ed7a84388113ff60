"""The worker processes a dispatcher supervises, and what it enforces on them.

A Worker is the dispatcher's own child (popen) or a process adopted after a restart (adoption.py). The Crew holds them
by run id and, on every tick: stops (SIGTERM to the group, SIGKILL after kill_grace) the workers over max_runtime,
those whose run was taken from them (lease expired while paused, task archived; the heartbeat finds them) and those
lingering after their report. How their exits are recorded is reaping.py.
"""

from __future__ import annotations

import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import procs
from ..core.models import RunOutcome, TaskStatus
from ..domain.board import Board
from ..domain.config import DispatchSettings
from ..store import tasks as tsql
from .holding import Heartbeat
from .result import DispatchResult
from .wakeups import close_fd

#: run outcomes that mean the worker itself reported (its report wins over its exit code)
REPORTED = (RunOutcome.COMPLETED, RunOutcome.BLOCKED, RunOutcome.REVIEW_REQUESTED)
#: Popen objects of workers left running at exit; kept referenced so no finalizer warns about them
LEFT_RUNNING: list[subprocess.Popen[bytes]] = []


@dataclass
class Worker:
    """A worker process this dispatcher supervises: its own child (popen) or one adopted after a restart."""

    task_id: str
    run_id: int
    pid: int
    create_time: float | None
    attempt: int
    started_at: float
    deadline: float | None
    max_runtime: float | None
    popen: subprocess.Popen[bytes] | None = None
    pidfd: int = -1
    log: Path | None = None
    #: why we are stopping it: timed_out | fenced (its run was taken away) | linger (overstayed its report)
    kill_reason: str | None = None
    term_at: float | None = None
    killed_at: float | None = None
    #: the run was closed by the worker's own report; the process may still be finishing up
    reported: bool = False
    linger_until: float | None = None
    #: the pid of the watcher (watch.py) that supervises it, set while that watcher lives (0: its pid is unknown):
    #: the watcher extends its lease, enforces its max runtime and records its end; the dispatcher only counts it
    watcher: int | None = None
    #: started by this dispatcher (under a watcher: a one-pass dispatch), not adopted
    launched: bool = False

    @property
    def adopted(self) -> bool:
        return self.popen is None and not self.launched

    def signal(self, sig: int) -> bool:
        if self.popen is not None:
            # Our child is not reaped until we wait for it, so its pid (and process group id) cannot be reused.
            return procs.signal_group(self.pid, sig)
        return procs.signal_verified(self.pid, self.create_time, sig)

    def terminate(self, reason: str, now: float) -> None:
        self.kill_reason = self.kill_reason or reason
        self.term_at = now
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGCONT)  # a paused worker must run to act on SIGTERM

    def next_deadline(self, kill_grace: float) -> float | None:
        if self.term_at is not None:
            return None if self.killed_at is not None else self.term_at + kill_grace
        times = [t for t in (None if self.reported else self.deadline, self.linger_until) if t is not None]
        return min(times) if times else None

    def brief(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "run_id": self.run_id, "pid": self.pid, "attempt": self.attempt,
                "adopted": self.adopted, "watcher": self.watcher}


class Crew:
    """The supervised workers by run id (see the module docstring); their run leases are the heartbeat's to extend."""

    def __init__(self, board: Board, settings: DispatchSettings, result: DispatchResult, heartbeat: Heartbeat, *,
                 log: Callable[[str], None]) -> None:
        self.board = board
        self.s = settings
        self.result = result
        self.heartbeat = heartbeat
        self.log = log
        self.workers: dict[int, Worker] = {}

    def supervise(self, w: Worker) -> None:
        self.workers[w.run_id] = w
        if w.watcher is None:  # a watched worker's lease is its watcher's to extend
            self.heartbeat.watch(w.run_id, w.task_id, w.pid, w.create_time)

    def unwatch(self, w: Worker) -> None:
        """Its watcher is gone (killed: it would have recorded the run before exiting): from here on the worker is
        supervised like any adopted worker (lease, max runtime, its exit judged with status unknown)."""
        self.log(f"{w.task_id} run {w.run_id}: its watcher (pid {w.watcher}) is gone; supervising pid {w.pid}")
        w.watcher = None
        close_fd(w.pidfd)  # the watcher's pidfd: from now on we wake on the worker's exit
        w.pidfd = procs.pidfd(w.pid)
        self.heartbeat.watch(w.run_id, w.task_id, w.pid, w.create_time)

    def unsupervise(self, w: Worker) -> None:
        self.workers.pop(w.run_id, None)
        self.heartbeat.forget(w.run_id)
        close_fd(w.pidfd)
        w.pidfd = -1

    def take_fenced(self, now: float) -> None:
        """Workers whose run is no longer current (the heartbeat was refused): stop them unless they reported."""
        for run_id in self.heartbeat.take_fenced():
            self.fence(run_id, now)

    def fence(self, run_id: int, now: float) -> None:
        """The run is no longer current: stop its worker, unless the worker reported (then it may linger)."""
        w = self.workers.get(run_id)
        if w is None or w.term_at is not None or w.reported:
            return
        run = tsql.get_run(self.board.db, run_id)
        if run is not None and run.outcome in REPORTED:
            w.reported = True
            w.linger_until = now + self.s.linger
            return
        why = "its run was closed" if run is None else f"its run was closed as {run.outcome}"
        self.log(f"stopping {w.task_id} run {run_id} pid {w.pid}: {why}")
        w.terminate("fenced", now)

    def enforce(self, now: float) -> None:
        for w in list(self.workers.values()):
            self._enforce(w, now)

    def _enforce(self, w: Worker, now: float) -> None:
        if w.watcher is not None:
            return  # its watcher enforces max runtime and linger (two killers would race on the outcome)
        if w.term_at is None:
            if not w.reported and w.deadline is not None and now >= w.deadline:
                self.log(f"{w.task_id} run {w.run_id} exceeded max runtime {w.max_runtime:g}s: SIGTERM to pid {w.pid}")
                w.terminate("timed_out", now)
            elif w.linger_until is not None and now >= w.linger_until:
                self.log(f"{w.task_id} run {w.run_id} still running {self.s.linger:g}s after its report: stopping it")
                w.terminate("linger", now)
        elif w.killed_at is None and now >= w.term_at + self.s.kill_grace:
            self.log(f"{w.task_id} run {w.run_id} pid {w.pid} ignored SIGTERM for {self.s.kill_grace:g}s: SIGKILL")
            w.signal(signal.SIGKILL)
            w.killed_at = now

    def reclaim_expired(self) -> None:
        """Reclaim the runs whose lease expired; stop their workers if they are ours (paused or hung)."""
        by_task = {w.task_id: w for w in self.workers.values()}
        now = time.time()
        for task in self.board.reclaim_expired():
            self.result.counts["reclaimed"] += 1
            state = "gave up (blocked)" if task.status == TaskStatus.BLOCKED else f"back to {task.status}"
            if task.status == TaskStatus.BLOCKED:
                self.result.counts["gave_up"] += 1
            self.log(f"{task.id}: lease expired, run reclaimed; {state}")
            w = by_task.get(task.id)
            if w is not None and w.term_at is None:
                self.log(f"stopping {w.task_id} run {w.run_id} pid {w.pid}: its lease expired (paused or hung)")
                w.terminate("fenced", now)

    def next_wake(self, now: float, until: float) -> float:
        """`until`, brought forward to the workers' next deadline (max_runtime, kill grace, linger)."""
        for w in self.workers.values():
            d = w.next_deadline(self.s.kill_grace)
            if d is not None:
                until = min(until, d)
            if w.pidfd < 0:
                until = min(until, now + 0.1)  # no pidfd on this kernel: poll for its exit
        return until

    def register(self, poller: select.poll) -> None:
        """Wake `poller` when a worker exits."""
        for w in self.workers.values():
            if w.pidfd >= 0:
                poller.register(w.pidfd, select.POLLIN)

    def leave_running(self) -> None:
        """Stopping now: the workers still running are listed and left under their leases (never orphaned silently)."""
        for w in list(self.workers.values()):
            self.result.left_running.append(w.brief())
            if w.watcher is not None:
                self.log(f"left running: {w.task_id} run {w.run_id} pid {w.pid} under its watcher (pid {w.watcher}), "
                         "which records how it ends")
            else:
                self.log(f"left running: {w.task_id} run {w.run_id} pid {w.pid} (the next dispatcher adopts it; "
                         "otherwise its lease expires and the task is reclaimed)")
            if w.popen is not None:
                LEFT_RUNNING.append(w.popen)
            self.unsupervise(w)
