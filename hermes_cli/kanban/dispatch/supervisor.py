"""The dispatcher: a supervisor that leases ready tasks to worker processes it starts (DESIGN.md: Tasks, runs and
leases; Worker contract; Notifications).

One dispatcher per board, guaranteed by the board-level lease (leases.py). Its main thread runs the loop below; a
heartbeat thread (own database connection) refreshes the dispatcher lease and extends the run leases of the worker
processes it can see alive, so a long spawn or reap never lets a lease lapse; a backup thread (own connection,
auto_backup.py) keeps the newest verified backup younger than `backup_interval`, so a backup never holds up the loop.

Each iteration of the loop:
1. per-tick maintenance (`_per_tick_maintenance`: the one place for board chores such as draining the spool);
   best effort: a failure there is logged and the loop carries on;
2. reap: workers that exited are recorded (exit 0 = completed, non-zero = crashed, killed on max_runtime =
   timed_out); a worker's own report (`hermes kanban complete` in the worker) wins over its exit code: finish_run
   is fenced and a run the worker already closed is left as it is;
3. enforce: SIGTERM to the group of workers over max_runtime (SIGKILL after kill_grace), stop workers whose run
   was taken from them (lease expired while paused, task archived), and workers lingering after their report;
4. reclaim expired leases (only when one is due: a reclaim writes and rings the doorbell);
5. every poll interval: look at open runs this dispatcher does not supervise. A run recorded on this host with a
   (pid, start time) that is no longer alive is closed as crashed now; a live one is adopted (supervised, its
   lease extended, its max_runtime enforced). Runs without a verifiable process are left to lease expiry, which is
   the final truth;
6. dispatch: claim ready tasks (in the same transaction that checks this dispatcher still holds the lease) and
   start their workers, up to max_spawn running at once;
7. sleep until the doorbell rings (a task became ready, was unblocked, a parent completed...), a worker exits
   (pidfd), a signal arrives, or the next deadline (retry due, lease expiry, max_runtime, kill grace) — bounded by
   the fallback poll interval, so a lost ring costs latency only.

Starting: the lease is taken at once when it is free, stale, or held by a dispatcher of this host that is provably
gone (leases.py). Held by a live one: a one-pass run (`once`, `until_idle`) stops as `skipped`; a long-running one
stands by, woken by the holder's exit (pidfd), the doorbell (a release rings it), signals and the time its lease would
lapse, checking the lease with a read (never the write lock) until it may take over.

Stopping: SIGINT/SIGTERM/SIGHUP = graceful (stop spawning and backing up, wait for the supervised workers and for a
backup in progress, record them, release the lease); a second signal = immediate (the workers still running are listed
and left running under their leases: the next dispatcher adopts them, or their leases expire and the tasks are
reclaimed; a backup in progress is abandoned). `timeout` stops the same way as the second signal at the deadline.
Stopping now never waits for the write lock: every connection of the dispatcher has a stop check
(Database.set_stop_check), so a write that finds the board locked gives up at once.
Workers are never orphaned silently.

Exit statuses are never dropped: an exit the board cannot take now (locked past the busy budget, or not writable) is
kept and retried on every tick, and an exit 0 is also written to the spool at once (like a worker's own report), so
that it survives an immediate stop or a crash: the next dispatcher's spool drain (or reconcile-completions) applies it,
and a run whose report waits in the spool is never judged crashed.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

from ..core import procs
from ..core.errors import (
    BoardBusy,
    Conflict,
    HermesError,
    LeaseHeld,
    NotFound,
    StaleRun,
    StorageError,
    WriteInterrupted,
)
from ..core.models import Claim, Run, RunOutcome, Task, TaskStatus, iso
from ..domain.board import Board
from ..domain.config import DispatchSettings
from ..durability import drain, spool
from ..live.doorbell import Doorbell
from ..store import dispatch as dsql
from ..store import tasks as tsql
from . import lease as leases
from . import spawn
from .backups import AutoBackup
from .lease import DispatcherLease

#: run outcomes that mean the worker itself reported (its report wins over its exit code)
REPORTED = (RunOutcome.COMPLETED, RunOutcome.BLOCKED, RunOutcome.REVIEW_REQUESTED)
#: a run claimed by another dispatcher on this host gets this long to have its worker's pid recorded
UNRECORDED_GRACE_S = 5.0
#: how long a stop waits for an abandoned backup to notice (it stops at the copy's next step, or after verifying)
BACKUP_ABANDON_WAIT_S = 30.0
#: Popen objects of workers left running at exit; kept referenced so no finalizer warns about them
_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []
#: the signals that stop the dispatcher (the first gracefully, the second now)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: while exit statuses wait to be recorded, the loop looks again at least this often
RETRY_RECORD_S = 0.25


class StopReason(StrEnum):
    IDLE = "idle"  #: --until-idle: nothing ready, running or waiting for a retry
    ONCE = "once"  #: --once: the pass's workers have finished
    TIMEOUT = "timeout"  #: --timeout reached
    SIGNAL = "signal"  #: SIGINT/SIGTERM
    LEASE_LOST = "lease_lost"  #: another dispatcher holds the board now
    STORAGE = "storage_error"  #: the board's storage is unhealthy
    SKIPPED = "skipped"  #: another dispatcher held the lease; nothing was done


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

    @property
    def adopted(self) -> bool:
        return self.popen is None

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
                "adopted": self.adopted}


@dataclass
class Unrecorded:
    """An exit status the board could not take yet (locked, or not writable): retried on every tick. An exit 0 is
    spooled as well (`spooled`), so an immediate stop or a crash of the dispatcher cannot lose it."""

    task_id: str
    run_id: int
    attempt: int
    outcome: RunOutcome
    summary: str
    exit_code: int | None
    took: float | None
    worker: Worker | None
    spooled: spool.SpooledReport | None = None


@dataclass
class DispatchResult:
    board: str
    reason: StopReason | None = None
    message: str = ""
    epoch: int | None = None
    holder: DispatcherLease | None = None
    took_over_from: DispatcherLease | None = None
    broke_lock: DispatcherLease | None = None
    started_at: float = field(default_factory=time.time)
    stopped_at: float | None = None
    counts: Counter[str] = field(default_factory=Counter)
    left_running: list[dict[str, Any]] = field(default_factory=list)
    error: HermesError | None = None

    @property
    def skipped(self) -> bool:
        return self.reason == StopReason.SKIPPED

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    def as_dict(self) -> dict[str, Any]:
        keys = ("spawned", "completed", "reported", "crashed", "timed_out", "reclaimed", "spawn_failed", "gave_up",
                "adopted", "backups", "backup_failed")
        return {
            "board": self.board,
            "skipped": self.skipped,
            "reason": None if self.reason is None else str(self.reason),
            "message": self.message,
            "epoch": self.epoch,
            "holder": None if self.holder is None else self.holder.as_dict(),
            "took_over_from": None if self.took_over_from is None else self.took_over_from.as_dict(),
            "broke_lock": None if self.broke_lock is None else self.broke_lock.as_dict(),
            "started_at": iso(self.started_at),
            "stopped_at": iso(self.stopped_at),
            "duration_s": None if self.stopped_at is None else round(self.stopped_at - self.started_at, 3),
            **{k: self.counts.get(k, 0) for k in keys},
            "left_running": self.left_running,
            "error": None if self.error is None else {"code": self.error.code, "message": self.error.message},
        }

    def human(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        """The text summary, line by line (a renderer may escape each line: they quote host names and task data)."""
        if self.skipped:
            return [self.message]
        c = self.counts
        parts = [f"spawned {c['spawned']}", f"completed {c['completed']}", f"reported {c['reported']}",
                 f"crashed {c['crashed']}", f"timed out {c['timed_out']}", f"reclaimed {c['reclaimed']}",
                 f"gave up {c['gave_up']}"]
        if c["spawn_failed"]:
            parts.append(f"spawn failed {c['spawn_failed']}")
        if c["adopted"]:
            parts.append(f"adopted {c['adopted']}")
        if c["backups"]:
            parts.append(f"backups {c['backups']}")
        if c["backup_failed"]:
            parts.append(f"backup failed {c['backup_failed']}")
        took = self.stopped_at - self.started_at if self.stopped_at else 0.0
        lines = [f"dispatch {self.board}: stopped ({self.reason}) after {took:.1f}s: " + ", ".join(parts)]
        if self.broke_lock is not None:
            lines.append(f"broke the stale lease of {self.broke_lock.describe()}")
        for w in self.left_running:
            lines.append(f"left running: {w['task_id']} run {w['run_id']} pid {w['pid']} (the next dispatcher "
                         "adopts it; otherwise its lease expires and the task is reclaimed)")
        return lines


class Dispatcher:
    """Dispatch one board. `run()` returns when stopped; see the module docstring for the loop."""

    def __init__(
        self,
        board: Board,
        settings: DispatchSettings,
        *,
        once: bool = False,
        until_idle: bool = False,
        timeout: float | None = None,
        break_lock_max_age: float | None = None,
        log: Callable[[str], None] | None = None,
        env: Mapping[str, str] | None = None,
        on_signals: Callable[[], None] | None = None,
    ) -> None:
        self.board = board
        self.s = settings
        self.once = once
        self.until_idle = until_idle
        self.timeout = timeout
        self.break_lock_max_age = break_lock_max_age
        self._log = log
        #: called once run() has installed its signal handlers (the CLI's start-up handlers stand down then)
        self._on_signals = on_signals
        self.env = dict(os.environ if env is None else env)
        self.result = DispatchResult(board=board.slug)
        self.workers: dict[int, Worker] = {}
        self.epoch = 0
        self.deadline: float | None = None
        self.worker_name = f"dispatcher@{procs.HOST}:{os.getpid()}"
        self._any_command = settings.default_command is not None
        # signals and wake-ups
        self._signals = 0
        self._signals_noted = 0
        self._last_signal: int = signal.SIGTERM  # the handler receives a plain int signum
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup_fd: int | None = None
        self._wake_r = self._wake_w = -1
        self.doorbell: Doorbell | None = None
        # shared with the heartbeat thread (under _lock)
        self._lock = threading.Lock()
        self._beats: dict[int, tuple[str, int, float | None]] = {}
        self._fenced: set[int] = set()
        self._lease_lost: str | None = None
        self._fatal: HermesError | None = None
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        #: the backup thread (None: backup_interval is off, or not started yet)
        self._backups: AutoBackup | None = None
        #: the last failure of the per-tick chores, until they succeed again (logged once, not every tick)
        self._chores_failing: str | None = None
        #: exit statuses observed but not recorded yet, by run id (see Unrecorded)
        self._unrecorded: dict[int, Unrecorded] = {}
        #: runs left open because their report waits in the spool (logged once each)
        self._spool_waits: set[int] = set()

    # -- public ------------------------------------------------------------------------------------------------------
    def run(self) -> DispatchResult:
        res = self.result
        self._install_signals()
        try:
            if self.timeout is not None:
                self.deadline = time.time() + self.timeout
            self._open_wakeups()
            # From here on no write of the main thread waits for the lock once we are stopping now.
            self.board.db.set_stop_check(self._stop_now)
            if self.break_lock_max_age is not None:
                res.broke_lock = leases.break_lock(self.board, max_age=self.break_lock_max_age)
                if res.broke_lock is not None:
                    self.log(f"broke the stale lease of {res.broke_lock.describe()}")
            got = self._acquire()
            if got is None:
                res.stopped_at = time.time()
                return res
            lease, previous = got
            self.epoch = lease.epoch
            res.epoch, res.holder = lease.epoch, lease
            res.took_over_from = previous
            if previous is not None:
                if previous.age(lease.acquired_at) > self.s.lease_grace:
                    self.log(f"took over the stale lease of {previous.describe(lease.acquired_at)}")
                else:
                    self.log(f"took over the lease of {previous.describe(lease.acquired_at)}: its process is gone")
            try:
                self._start_heartbeat()
                self._start_backups()
                self._loop()
            except LeaseHeld as exc:
                res.reason, res.error = StopReason.LEASE_LOST, exc
                self.log(f"error: {exc.message}; stopping")
            except StorageError as exc:
                res.reason, res.error = StopReason.STORAGE, exc
                self.log(f"error: {exc.message}; stopping")
            finally:
                self._shutdown()
            return res
        finally:
            self.board.db.set_stop_check(None)  # the board is the caller's again
            if self.doorbell is not None:
                self.doorbell.close()
                self.doorbell = None
            self._restore_signals()
            res.stopped_at = time.time()

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    # -- the lease: take it, or stand by -----------------------------------------------------------------------------
    def _acquire(self) -> tuple[DispatcherLease, DispatcherLease | None] | None:
        """Take the board's lease. A live holder: a one-pass run returns None (skipped); a long-running one stands by
        until the lease is released, lapses or its holder's process is gone, and returns None only when a signal or
        the --timeout ends the wait. The lease is read first: a write (BEGIN IMMEDIATE) only when it can be taken."""
        res = self.result
        standing_by = False
        while True:
            if self._signals:
                res.reason = StopReason.SIGNAL
                self.log(f"{signal.Signals(self._last_signal).name}: stopping"
                         + (" (was standing by; nothing was started)" if standing_by else ""))
                return None
            if self.deadline is not None and time.time() >= self.deadline:
                res.reason = StopReason.TIMEOUT
                self.log("timeout reached while standing by: stopping (nothing was started)")
                return None
            holder = leases.read_lease(self.board)
            held = holder is not None and leases.keeps_others_out(holder, grace=self.s.lease_grace)
            if not held:
                try:
                    return leases.acquire(self.board, grace=self.s.lease_grace)
                except LeaseHeld:
                    holder = leases.read_lease(self.board)  # refreshed (or taken) since our read: still held
                except WriteInterrupted:
                    continue  # a signal or the deadline: the checks above end the wait
                except BoardBusy as exc:
                    if not standing_by:
                        raise  # as before: a board locked past the busy budget at start is a storage error
                    self.log(f"warning: {exc.message}; still standing by")
            if holder is not None and leases.keeps_others_out(holder, grace=self.s.lease_grace):
                if self.once or self.until_idle:
                    res.reason = StopReason.SKIPPED
                    res.message = f"skipped: lease held by {holder.describe()}"
                    res.holder = holder
                    return None
                res.holder = holder
                if not standing_by:
                    standing_by = True
                    self.log(f"standby: lease held by {holder.describe()}; taking over when it is released, its "
                             "process exits or it is not refreshed for the grace period "
                             f"({self.s.lease_grace:g}s)")
            self._stand_by(holder)

    def _stand_by(self, holder: DispatcherLease | None) -> None:
        """Wait until the lease may have changed hands: a signal, a doorbell ring (a release writes an event), the
        holder's exit (a pidfd when it runs on this host), the moment its lease would lapse, or the fallback poll."""
        now = time.time()
        until = now + self.s.poll_interval
        if self.deadline is not None:
            until = min(until, self.deadline)
        fd = -1
        if holder is not None:
            until = min(until, holder.refreshed_at + self.s.lease_grace + 0.01)
            if holder.host == procs.HOST:
                fd = procs.pidfd(holder.pid)
        try:
            if holder is not None and holder.host == procs.HOST and leases.holder_gone(holder):
                return  # gone (or its pid now names another process) since we looked: take over now
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            if self.doorbell is not None:
                poller.register(self.doorbell.fileno(), select.POLLIN)
            if fd >= 0:
                poller.register(fd, select.POLLIN)
            # at least 10 ms: a lease that lapses "now" by our clock but was just refreshed must not spin the loop
            poller.poll(max(10, int((until - now) * 1000 + 0.999)))
        finally:
            _close(fd)
        self._drain_wake()
        if self.doorbell is not None:
            self.doorbell.drain()

    def _stop_now(self) -> bool:
        """Whether the dispatcher is stopping now (a second signal, the deadline, or any signal before it holds the
        lease): the stop check of its connections, so no write waits for the lock any more."""
        if self._signals >= 2 or (self._signals and not self.epoch):
            return True
        return self.deadline is not None and time.time() >= self.deadline

    # -- the loop ----------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        res = self.result
        pass_done = False
        next_scan = 0.0
        while True:
            now = time.time()
            with self._lock:
                lost, fatal = self._lease_lost, self._fatal
            if lost is not None:
                raise LeaseHeld(lost)
            if fatal is not None:
                raise fatal
            self._note_signals()
            if self._signals >= 2:
                res.reason = StopReason.SIGNAL
                return
            if self.deadline is not None and now >= self.deadline:
                res.reason = StopReason.TIMEOUT
                self.log(f"timeout reached: stopping (workers still running: {len(self.workers)})")
                return
            try:
                scan = now >= next_scan
                self._maintenance(now, scan=scan)
                if scan:
                    next_scan = now + self.s.poll_interval
                spawning = self._signals == 0 and not pass_done
                if spawning:
                    self._dispatch()
                    pass_done = self.once
            except BoardBusy as exc:
                if self._stop_now():
                    continue  # stopping now (the checks above end the loop): never wait for the lock
                # Transient: other writers held the board past our retry budget. Try again on the next tick.
                self.log(f"warning: {exc.message}")
                self._wait(min(1.0, self.s.poll_interval))
                continue
            if self._signals >= 1 and not self.workers and not self._unrecorded:
                self._note_signals()  # it may have come after the check at the top: still say so
                res.reason = StopReason.SIGNAL
                return
            if (self.once and pass_done and not any(not w.adopted for w in self.workers.values())
                    and not self._unrecorded):
                res.reason = StopReason.ONCE
                return
            if self.until_idle and self._idle():
                res.reason = StopReason.IDLE
                return
            self._wait(self._next_wake(time.time(), spawning=self._signals == 0 and not pass_done))

    def _per_tick_maintenance(self) -> None:
        """Board chores done once per loop iteration, before workers are reaped (so a completion that was spooled
        because the board was busy is applied before its worker's exit is judged). The spool drain goes here."""
        drain.drain_if_healthy(self.board, log=self.log)

    def _chores(self) -> None:
        """`_per_tick_maintenance`, never fatal: the chores are best effort (a report left in the spool is applied
        on a later tick, or by `reconcile-completions`), while supervising the workers is not. A failure is logged
        once (and once more when it changes), not on every tick; a board that is really unhealthy stops the loop
        through the reaping and claiming that follow."""
        try:
            self._per_tick_maintenance()
        except (HermesError, OSError) as exc:
            text = exc.message if isinstance(exc, HermesError) else f"{exc.__class__.__name__}: {exc}"
            if text != self._chores_failing:
                self.log(f"warning: per-tick maintenance failed: {text}; trying again every tick")
            self._chores_failing = text
            return
        if self._chores_failing is not None:
            self.log("per-tick maintenance works again")
            self._chores_failing = None

    def _maintenance(self, now: float, *, scan: bool) -> None:
        # First the exit statuses the board could not take before: ahead of the spool drain (which would otherwise
        # apply our own spooled exit 0), of the scan and of reclaims (which would judge those runs anew). While the
        # board is still locked the drain is skipped: it would take a backup, then fail on the same lock.
        if self._retry_unrecorded():
            self._chores()
        for w in list(self.workers.values()):
            self._reap_if_exited(w)
        self._take_fenced(now)
        for w in list(self.workers.values()):
            self._enforce(w, now)
        if scan:
            if self.doorbell is not None and self.doorbell.repair():
                self.log("warning: the doorbell FIFO had vanished; re-created it")
            # Before reclaiming: a worker that provably still runs is adopted (and its lease extended) rather than
            # reclaimed just because its dispatcher was away for longer than its lease.
            self._scan_runs()
        expiry = dsql.earliest_lease_expiry(self.board.db)
        if expiry is not None and expiry < now:
            self._reclaim_expired()

    def _idle(self) -> bool:
        """Nothing of ours running, nothing dispatchable now or by a retry, and nothing running on the board at
        all: a run we cannot supervise (another host, or a pid never recorded) ends by report or lease expiry,
        and its task may then need us again."""
        if self.workers or self._unrecorded:
            return False
        now = time.time()
        db = self.board.db
        if dsql.dispatchable(db, now, any_command=self._any_command, limit=1):
            return False
        if dsql.earliest_lease_expiry(db) is not None:
            return False
        return dsql.next_retry_at(db, any_command=self._any_command, after=now) is None

    def _next_wake(self, now: float, *, spawning: bool) -> float:
        until = now + self.s.poll_interval
        if self.deadline is not None:
            until = min(until, self.deadline)
        db = self.board.db
        if spawning and len(self.workers) < self.s.max_spawn:
            retry = dsql.next_retry_at(db, any_command=self._any_command, after=now)
            if retry is not None:
                until = min(until, retry)
        expiry = dsql.earliest_lease_expiry(db)
        if expiry is not None and expiry >= now:
            until = min(until, expiry + 0.005)
        for w in self.workers.values():
            d = w.next_deadline(self.s.kill_grace)
            if d is not None:
                until = min(until, d)
            if w.pidfd < 0:
                until = min(until, now + 0.1)  # no pidfd on this kernel: poll for its exit
        if self._unrecorded:
            until = min(until, now + RETRY_RECORD_S)
        return max(0.0, until - now)

    def _wait(self, timeout: float) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if self.doorbell is not None:
            poller.register(self.doorbell.fileno(), select.POLLIN)
        for w in self.workers.values():
            if w.pidfd >= 0:
                poller.register(w.pidfd, select.POLLIN)
        poller.poll(max(0, int(timeout * 1000 + 0.999)))
        self._drain_wake()
        if self.doorbell is not None:
            self.doorbell.drain()

    # -- dispatching -------------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        for _ in range(max(0, self.s.max_spawn - len(self.workers))):
            # A read first: a wake-up with nothing to start takes no write lock (and never waits for one).
            if not dsql.dispatchable(self.board.db, time.time(), any_command=self._any_command, limit=1):
                return
            got = self._claim_next()
            if got is None:
                return
            self._spawn(*got)

    def _claim_next(self) -> tuple[Claim, Task] | None:
        board = self.board

        def tx() -> tuple[Claim, Task] | None:
            leases.check_held(board, self.epoch)  # fenced by our lease: a dispatcher that lost it starts nothing
            ids = dsql.dispatchable(board.db, time.time(), any_command=self._any_command, limit=1)
            if not ids:
                return None
            claim = board.claim(ids[0], worker=self.worker_name, ttl=self.s.worker_ttl)
            assert claim is not None  # a specific ready task in our own transaction is always claimable
            return claim, tsql.get_task(board.db, claim.task_id)

        return board.db.write(tx)

    def _spawn(self, claim: Claim, task: Task) -> None:
        command = task.command or self.s.default_command
        assert command is not None  # dispatchable() only returns tasks with a command unless there is a default
        try:
            started = spawn.start(
                self.board.paths, command=command, task_id=task.id, run_id=claim.run_id, title=task.title,
                attempt=claim.attempt, env_base=self.env, max_bytes=self.s.log_max_bytes,
                backups=self.s.log_backups,
            )
        except (OSError, ValueError, subprocess.SubprocessError, HermesError) as exc:
            # No such program, not executable, a bad command line, an argument Popen refuses (ValueError: a NUL
            # byte from a board written before `create` refused them, or from a default command), a symlink where
            # the workspace or log should be: the attempt fails like a crash, so the run is closed and retries
            # (with backoff) and max_retries bound a spawn loop; the dispatcher never dies over one task.
            self.result.counts["spawn_failed"] += 1
            reason = exc.message if isinstance(exc, HermesError) else f"{exc.__class__.__name__}: {exc}"
            self._record(task.id, claim.run_id, claim.attempt, RunOutcome.CRASHED, f"spawn failed: {reason}", None,
                         keep=True)
            return
        pid = started.popen.pid
        max_runtime = task.max_runtime_s or self.s.max_runtime_default
        now = time.time()
        w = Worker(
            task_id=task.id, run_id=claim.run_id, pid=pid, create_time=procs.create_time(pid), attempt=claim.attempt,
            started_at=now, deadline=None if max_runtime is None else now + max_runtime, max_runtime=max_runtime,
            popen=started.popen, pidfd=procs.pidfd(pid), log=started.log,
        )
        self._supervise(w)
        self.result.counts["spawned"] += 1
        self.log(f"spawned {task.id} run {claim.run_id} attempt {claim.attempt} pid {pid}: {shlex.join(started.argv)}")
        try:
            self.board.set_run_process(claim.run_id, pid, w.create_time)
        except BoardBusy as exc:
            # The worker runs and is supervised; only its pid is missing from the board (lease expiry still rules).
            self.log(f"warning: could not record pid {pid} of run {claim.run_id}: {exc.message}")

    def _supervise(self, w: Worker) -> None:
        self.workers[w.run_id] = w
        with self._lock:
            self._beats[w.run_id] = (w.task_id, w.pid, w.create_time)

    def _unsupervise(self, w: Worker) -> None:
        self.workers.pop(w.run_id, None)
        with self._lock:
            self._beats.pop(w.run_id, None)
            self._fenced.discard(w.run_id)
        _close(w.pidfd)
        w.pidfd = -1

    # -- reaping -----------------------------------------------------------------------------------------------------
    def _reap_if_exited(self, w: Worker) -> None:
        if w.popen is not None:
            if not procs.exited(w.pid):
                return
            if w.kill_reason is not None:
                # Still unreaped, so the group id is reserved: clean up whatever it left behind in its group.
                procs.signal_group(w.pid, signal.SIGKILL)
            returncode: int | None = w.popen.wait()
        else:
            if procs.state(w.pid, w.create_time) != procs.ProcState.DEAD:
                return
            returncode = None
        self._unsupervise(w)
        self._finish(w, returncode)

    def _finish(self, w: Worker, returncode: int | None) -> None:
        took = time.time() - w.started_at
        try:
            run = tsql.get_run(self.board.db, w.run_id)
        except StorageError:
            run = None  # cannot tell whether it reported: _record keeps (and spools) what we saw
        if run is not None and run.ended_at is not None:
            # Closed before the process ended: by the worker's own report (it wins), a reclaim or an archive.
            if run.outcome in REPORTED:
                self.result.counts["reported"] += 1
            self._note(w, f"{w.task_id} run {w.run_id} {_exit_text(returncode)}{_after(took)}; "
                          f"its run was already closed: {run.outcome}")
            return
        if w.kill_reason == "timed_out":
            outcome = RunOutcome.TIMED_OUT
            summary = f"killed after max runtime {w.max_runtime:g}s ({_exit_text(returncode)})"
        elif returncode is None:
            outcome = RunOutcome.CRASHED
            summary = f"worker pid {w.pid} exited while not supervised by its own dispatcher (exit status unknown)"
        elif returncode == 0:
            outcome, summary = RunOutcome.COMPLETED, "exited 0"
        else:
            outcome, summary = RunOutcome.CRASHED, _exit_text(returncode)
        self._record(w.task_id, w.run_id, w.attempt, outcome, summary, returncode, took=took, worker=w, keep=True)

    def _record(self, task_id: str, run_id: int, attempt: int, outcome: RunOutcome, summary: str,
                exit_code: int | None, *, took: float | None = None, worker: Worker | None = None,
                keep: bool = False) -> None:
        """Record how a run ended. `keep`: the outcome was observed (an exit status, a failed spawn), so if the
        board cannot take it now it is kept and retried (an exit 0 also spooled) instead of being dropped; a
        storage error other than a busy board still stops the loop (raised), with the outcome kept. Without
        `keep` (a judgment from the scan, made again on the next one) a storage error propagates as it is."""
        if outcome != RunOutcome.COMPLETED and exit_code is None and self._report_spooled(task_id, run_id):
            return  # the worker's own report (or our exit 0) waits in the spool: the drain applies it
        rec = Unrecorded(task_id, run_id, attempt, outcome, summary, exit_code, took, worker)
        try:
            self._record_now(rec)
        except StorageError as exc:
            if not keep:
                raise
            self._keep(rec, exc)
            if not isinstance(exc, BoardBusy):
                raise

    def _report_spooled(self, task_id: str, run_id: int) -> bool:
        """Whether a report for this run waits in the spool: then the run is not judged crashed (status unknown);
        the spool drain applies the report (or reconcile-completions, for a person)."""
        if not os.path.lexists(self.board.paths.spool_dir / spool.file_name(task_id, run_id)):
            return False
        if run_id not in self._spool_waits:
            self._spool_waits.add(run_id)
            self.log(f"{task_id} run {run_id}: its process is gone and a report for it waits in the spool; "
                     "leaving the run to the spool drain")
        return True

    def _keep(self, rec: Unrecorded, exc: StorageError) -> None:
        """Keep an outcome the board could not take; spool an exit 0 (durable) the first time."""
        self._unrecorded[rec.run_id] = rec
        where = ""
        if rec.outcome == RunOutcome.COMPLETED and rec.spooled is None:
            try:
                rec.spooled, _ = spool.spool_report(self.board.paths, "complete", rec.task_id, rec.run_id,
                                                    summary=rec.summary, error=exc)
                where = f"; spooled to {rec.spooled.path}"
            except Conflict:
                where = "; the worker's own report for it is already spooled"  # its report wins anyway
            except StorageError as spool_exc:
                where = f"; could not spool it either ({spool_exc.message})"
        self._note(rec.worker, f"warning: could not record {rec.task_id} run {rec.run_id} {rec.outcome} "
                               f"({exc.message}); kept, retrying{where}")

    def _retry_unrecorded(self) -> bool:
        """Record what the board could not take before. Stops at the first busy failure (the board is still locked)
        and returns False then; a spooled exit 0 recorded here is filed as applied, so the drain does not apply it
        again."""
        for rec in list(self._unrecorded.values()):
            try:
                applied = self._record_now(rec)
            except BoardBusy:
                return False
            del self._unrecorded[rec.run_id]
            if rec.spooled is not None and applied:
                try:
                    spool.archive(self.board.paths, rec.spooled, spool.APPLIED)
                except (HermesError, OSError) as exc:
                    # Harmless: the drain finds the run closed with this very report and files it as skipped.
                    text = exc.message if isinstance(exc, HermesError) else f"{exc.__class__.__name__}: {exc}"
                    self.log(f"warning: could not file {rec.spooled.path} as applied: {text}")
        return True

    def _record_now(self, rec: Unrecorded) -> bool:
        """One attempt to record `rec`. Returns whether it closed the run (False: closed already, or gone)."""
        task_id, run_id, attempt, outcome = rec.task_id, rec.run_id, rec.attempt, rec.outcome
        summary, exit_code, took, worker = rec.summary, rec.exit_code, rec.took, rec.worker
        give_up = self.s.failure_limit is not None and attempt >= self.s.failure_limit
        try:
            task = self.board.finish_run(task_id, run_id, outcome, summary=summary, exit_code=exit_code,
                                         give_up=give_up and outcome != RunOutcome.COMPLETED)
        except StaleRun:
            run = tsql.get_run(self.board.db, run_id)
            if run is not None and run.outcome in REPORTED:
                self.result.counts["reported"] += 1
            text = (f"{task_id} run {run_id}{_after(took)}: {summary}; the run was already closed "
                    f"({run.outcome if run else '?'})")
            self._note(worker, text)
            return False
        except NotFound:
            self.log(f"{task_id} run {run_id}: {summary}; the task is gone")
            return False
        self.result.counts[str(outcome)] += 1
        text = f"{task_id} run {run_id} {outcome}{_after(took)}: {summary}"
        if outcome != RunOutcome.COMPLETED:
            if task.status == TaskStatus.BLOCKED:
                self.result.counts["gave_up"] += 1
                text += f"; gave up after {_plural(task.attempts, 'attempt')} (blocked)"
            elif task.retry_at is not None:
                text += f"; retry in {max(0.0, task.retry_at - time.time()):.1f}s"
        self._note(worker, text)
        return True

    def _note(self, w: Worker | None, text: str) -> None:
        """A line for the progress log, and for the task's own log when we know the worker."""
        self.log(text)
        if w is not None and w.log is not None:
            spawn.append_log_line(w.log, text)

    # -- enforcing ---------------------------------------------------------------------------------------------------
    def _take_fenced(self, now: float) -> None:
        """Workers whose run is no longer current (the heartbeat was refused): stop them unless they reported."""
        with self._lock:
            fenced, self._fenced = self._fenced, set()
        for run_id in fenced:
            w = self.workers.get(run_id)
            if w is None or w.term_at is not None or w.reported:
                continue
            run = tsql.get_run(self.board.db, run_id)
            if run is not None and run.outcome in REPORTED:
                w.reported = True
                w.linger_until = now + self.s.linger
                continue
            why = "its run was closed" if run is None else f"its run was closed as {run.outcome}"
            self.log(f"stopping {w.task_id} run {run_id} pid {w.pid}: {why}")
            w.terminate("fenced", now)

    def _enforce(self, w: Worker, now: float) -> None:
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

    def _reclaim_expired(self) -> None:
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

    # -- runs we do not supervise yet --------------------------------------------------------------------------------
    def _scan_runs(self) -> None:
        for run in self.board.open_runs():
            if run.id in self.workers:
                continue
            if run.host == procs.HOST and run.pid is None and self._recover_unrecorded(run):
                continue
            if run.host != procs.HOST or run.pid is None or run.pid_create_time is None:
                continue  # nothing to verify here: lease expiry decides
            state = procs.state(run.pid, run.pid_create_time)
            if state == procs.ProcState.DEAD:
                task = self._task_or_none(run.task_id)
                attempt = task.attempts if task is not None else 0
                self._record(run.task_id, run.id, attempt, RunOutcome.CRASHED,
                             f"worker pid {run.pid} is gone (no process with that pid and start time); "
                             "exit status unknown", None)
                continue
            task = self._task_or_none(run.task_id)
            if task is None or task.status != TaskStatus.RUNNING or task.current_run_id != run.id:
                continue
            fd = procs.pidfd(run.pid)
            try:
                if procs.state(run.pid, run.pid_create_time) == procs.ProcState.DEAD:  # exited while we opened it
                    _close(fd)
                    continue
                if state == procs.ProcState.ALIVE:
                    try:
                        self.board.heartbeat(task.id, run.id, ttl=self.s.worker_ttl)
                    except (StaleRun, NotFound):  # closed meanwhile (its report, or a reclaim): nothing to adopt
                        _close(fd)
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
                _close(fd)
                raise
            self._supervise(w)  # from here on, _unsupervise closes the fd
            self.result.counts["adopted"] += 1
            self.log(f"adopted {task.id} run {run.id} pid {run.pid} ({state}), left by an earlier dispatcher")

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
        found = procs.find_worker(run.id, str(self.board.paths.db))
        if found is not None:
            pid, started = found
            self.log(f"found the worker of {run.task_id} run {run.id} (pid {pid}) by its environment")
            self.board.set_run_process(run.id, pid, started)
            return True
        task = self._task_or_none(run.task_id)
        self._record(run.task_id, run.id, task.attempts if task is not None else 0, RunOutcome.CRASHED,
                     "its dispatcher stopped before the worker was started or recorded, and no process carries "
                     "the run's token", None)
        return True

    def _task_or_none(self, task_id: str) -> Task | None:
        try:
            return self.board.get_task(task_id)
        except NotFound:
            return None

    # -- heartbeat thread --------------------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._hb_thread = threading.Thread(target=self._heartbeat_main, name="dispatcher-heartbeat", daemon=True)
        self._hb_thread.start()

    def _heartbeat_main(self) -> None:
        # Signals are the main thread's business; keep them off this thread's SQLite calls.
        signal.pthread_sigmask(signal.SIG_BLOCK, {*STOP_SIGNALS, signal.SIGCHLD})
        paths = self.board.paths
        try:
            board = Board.open(paths.slug, db_path=str(paths.db))
        except HermesError as exc:
            with self._lock:
                self._fatal = exc
            self._wake()
            return
        # A stop never waits for this thread's refresh to get the write lock (_shutdown joins it).
        board.db.set_stop_check(self._hb_stop.is_set)
        try:
            while not self._hb_stop.wait(self.s.refresh_interval):
                self._beat(board)
        finally:
            board.close()

    def _beat(self, board: Board) -> None:
        try:
            held = leases.refresh(board, self.epoch)
            if not held:
                lease = leases.read_lease(board)
                who = "nobody" if lease is None else lease.describe()
                with self._lock:
                    self._lease_lost = f"dispatcher lease (epoch {self.epoch}) was lost; it is now held by {who}"
                self._wake()
                return
        except BoardBusy:
            return  # try again on the next beat; the grace period is several beats long
        except StorageError as exc:
            with self._lock:
                self._fatal = exc
            self._wake()
            return
        with self._lock:
            beats = list(self._beats.items())
        for run_id, (task_id, pid, started) in beats:
            if procs.state(pid, started) != procs.ProcState.ALIVE:
                continue  # paused or gone: its lease runs out (paused) or the main loop reaps it (gone)
            try:
                board.heartbeat(task_id, run_id, ttl=self.s.worker_ttl)
            except (StaleRun, NotFound):
                with self._lock:
                    self._beats.pop(run_id, None)
                    self._fenced.add(run_id)
                self._wake()
            except BoardBusy:
                continue
            except StorageError as exc:
                with self._lock:
                    self._fatal = exc
                self._wake()
                return

    # -- backup thread -----------------------------------------------------------------------------------------------
    def _start_backups(self) -> None:
        if self.s.backup_interval is None:
            return
        self._backups = AutoBackup(self.board.paths, self.s.backup_interval, log=self.log, on_exit=self._wake)
        self._backups.start()

    def _stop_backups(self) -> None:
        """No new backup from here on. A graceful stop (idle, once, the first signal) waits for a backup in progress
        (a second signal or the --timeout deadline meanwhile abandons it); any other stop (timeout, a second signal,
        lease lost, storage error) abandons it. Abandoning leaves no partial backup (auto_backup.py)."""
        ab = self._backups
        if ab is None:
            return
        res = self.result
        graceful = res.error is None and (
            res.reason in (StopReason.IDLE, StopReason.ONCE) or (res.reason == StopReason.SIGNAL and self._signals < 2)
        )
        ab.stop(abandon=not graceful)
        if ab.busy and not ab.finished.is_set():
            self.log("waiting for the backup in progress to finish" if graceful
                     else "abandoning the backup in progress")
        give_up_at = None if graceful else time.time() + BACKUP_ABANDON_WAIT_S
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        # The thread sets `finished` before it rings the wake pipe, so this wait cannot miss its end; a signal
        # rings the same pipe (set_wakeup_fd).
        while not ab.finished.is_set():
            self._note_signals()
            now = time.time()
            if give_up_at is None and (self._signals >= 2 or (self.deadline is not None and now >= self.deadline)):
                ab.stop(abandon=True)
                self.log("abandoning the backup in progress")
                give_up_at = now + BACKUP_ABANDON_WAIT_S
            if give_up_at is not None and now >= give_up_at:
                # Stuck in a system call (a hung disk): the copy is only ever a temp file, never a backup, so leave
                # the daemon thread behind rather than hang the stop.
                self.log(f"warning: the backup thread did not stop within {BACKUP_ABANDON_WAIT_S:g}s; leaving it "
                         f"(a temp file .kanban-*.tmp-* may remain in {self.board.paths.backups_dir})")
                break
            until = give_up_at if give_up_at is not None else self.deadline
            poller.poll(-1 if until is None else max(0, int((until - now) * 1000 + 0.999)))
            self._drain_wake()
        else:
            ab.join()
        res.counts["backups"] += ab.taken
        res.counts["backup_failed"] += ab.failed

    # -- signals and wake-ups ----------------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded in a thread (tests): the host program owns signals
        for sig in STOP_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        if self._on_signals is not None:
            self._on_signals()

    def _restore_signals(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers.clear()
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None
        with self._lock:  # the heartbeat thread may still call _wake(): never let it write to a reused fd number
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only count: printing from a handler can re-enter a buffered write the main thread is in the middle of.
        self._signals += 1
        self._last_signal = signum

    def _note_signals(self) -> None:
        if self._signals == self._signals_noted:
            return
        self._signals_noted = self._signals
        name = signal.Signals(self._last_signal).name
        if self._backups is not None:
            # No backup starts once we are stopping; a second signal also abandons the one in progress.
            self._backups.stop(abandon=self._signals >= 2)
        if self._signals == 1:
            self.log(f"{name}: stopping gracefully, waiting for {len(self.workers)} worker(s); "
                     "signal again to stop now and leave them running")
        else:
            self.log(f"{name}: stopping now")

    def _open_wakeups(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._old_handlers:
            self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        if self.s.doorbell:
            self.doorbell = Doorbell(self.board.paths.notify_dir, "dispatcher")

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                return  # the pipe is full of wake-ups: the main loop wakes anyway

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            return

    # -- stopping ----------------------------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        res = self.result
        self._stop_backups()  # first: the heartbeat keeps the lease while a graceful stop waits for a backup
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=30)
        # Flush: record whatever has exited meanwhile; what the board cannot take now (locked, or a storage error
        # stopped us) is kept: an exit 0 is spooled, the rest judged again by the next dispatcher.
        for w in list(self.workers.values()):
            try:
                self._reap_if_exited(w)
            except StorageError as exc:
                self.log(f"warning: could not record the exit of {w.task_id} run {w.run_id}: {exc.message}")
        try:
            self._retry_unrecorded()
        except StorageError as exc:
            self.log(f"warning: could not record the kept exit statuses: {exc.message}")
        for rec in self._unrecorded.values():
            if rec.spooled is not None:
                later = (f"its exit 0 is in the spool ({rec.spooled.path}); the next dispatcher or "
                         "reconcile-completions applies it")
            else:
                later = "the next dispatcher judges it again (exit status unknown then)"
            self.log(f"warning: {rec.task_id} run {rec.run_id} {rec.outcome} ({rec.summary}) was not recorded: {later}")
        for w in list(self.workers.values()):
            res.left_running.append(w.brief())
            self.log(f"left running: {w.task_id} run {w.run_id} pid {w.pid} (the next dispatcher adopts it; "
                     "otherwise its lease expires and the task is reclaimed)")
            if w.popen is not None:
                _LEFT_RUNNING.append(w.popen)
            self._unsupervise(w)
        if self.epoch and not isinstance(res.error, LeaseHeld):
            try:
                leases.release(self.board, self.epoch, reason=str(res.reason))
            except StorageError as exc:
                self.log(f"warning: could not release the dispatcher lease ({exc.message}); a dispatcher on this "
                         f"host takes it over once this process has exited, one elsewhere after "
                         f"{self.s.lease_grace:g}s")


def _close(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _after(took: float | None) -> str:
    return "" if took is None else f" after {took:.1f}s"


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        return f"killed by {procs.signal_name(returncode)}"
    return f"exited {returncode}"
