"""The dispatcher: a supervisor that leases ready tasks to worker processes it starts (DESIGN.md: Tasks, runs and
leases; Worker contract; Notifications).

One dispatcher per board, guaranteed by the board-level lease (lease.py); on a PostgreSQL board, a fleet instead:
every dispatcher registers and serves the board at once, supervising only its own workers (fleet.py). The Dispatcher
runs the loop below and owns one object per concern:
- holding.py: Standby takes the lease (or stands by while a live dispatcher holds it); the Heartbeat thread (own
  database connection) refreshes it and extends the run leases of the worker processes it can see alive, so a long
  spawn or reap never lets a lease lapse;
- workers.py: the Crew of supervised workers, and what is enforced on them (max_runtime, fencing, linger);
- reaping.py: the Reaper records how runs ended, and keeps the exit statuses the board cannot take yet;
- adoption.py: the Adopter deals with open runs no one here supervises (adopts the live, closes the dead);
- launch.py: the Launcher claims ready tasks and starts their workers (spawn.py: the worker contract);
- backups.py: the AutoBackup thread (own connection) keeps the newest verified backup younger than `backup_interval`,
  so a backup never holds up the loop;
- wakeups.py: the stop signals and the wake pipe; result.py: what a run returns.

Each iteration of the loop (a daemon woken by the bell first does step 6, then 1-5, then 6 again only if they freed a
slot or on a scan tick: a ready task waits for none of the chores; docs/dispatcher.md, Pickup latency):
1. per-tick maintenance (`_per_tick_maintenance`: the one place for board chores such as draining the spool);
   best effort: a failure there is logged and the loop carries on;
2. reap: workers that exited are recorded (reaping.py);
3. enforce: SIGTERM to the group of workers over max_runtime (SIGKILL after kill_grace), stop workers whose run
   was taken from them (lease expired while paused, task archived), and workers lingering after their report;
4. reclaim expired leases (only when one is due, by the expiry the last wait was timed by: a reclaim writes and rings
   the doorbell);
5. every poll interval: look at open runs this dispatcher does not supervise (adoption.py);
6. dispatch: claim ready tasks (in the same transaction that checks this dispatcher still holds the lease) and
   start their workers, up to max_spawn running at once;
7. sleep until the doorbell rings (a task became ready, was unblocked, a parent completed...), a worker exits
   (pidfd), a signal arrives, or the next deadline (retry due, lease expiry, max_runtime, kill grace) — bounded by
   the fallback poll interval, so a lost ring costs latency only.

Stopping: SIGINT/SIGTERM/SIGHUP = graceful (stop spawning and backing up, wait for the supervised workers and for a
backup in progress, record them, release the lease); a second signal = immediate (the workers still running are listed
and left running under their leases: the next dispatcher adopts them, or their leases expire and the tasks are
reclaimed; a backup in progress is abandoned). `timeout` stops the same way as the second signal at the deadline.
Stopping now never waits for the write lock: every connection of the dispatcher has a stop check
(Database.set_stop_check), so a write that finds the board locked gives up at once.
Workers are never orphaned silently.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Mapping

from ..core import procs
from ..core.errors import BoardBusy, BoardUnreachable, HermesError, LeaseHeld, StorageError
from ..domain.board import Board
from ..domain.config import DispatchSettings
from ..durability import drain
from ..live.bells import Bell, open_bell
from ..store import dispatch as dsql
from . import fleet
from . import lease as leases
from .adoption import Adopter
from .backups import AutoBackup
from .holding import Heartbeat, Standby
from .hub_sync import background_sync
from .launch import Launcher
from .reaping import Reaper
from .result import DispatchResult, StopReason
from .wakeups import StopSignals, WakePipe
from .workers import Crew, Worker

#: while exit statuses wait to be recorded, the loop looks again at least this often
RETRY_RECORD_S = 0.25


class Chores:
    """The per-tick maintenance (`Dispatcher._per_tick_maintenance`), never fatal: the chores are best effort (a
    report left in the spool is applied on a later tick, or by `reconcile-completions`), while supervising the workers
    is not. A failure is logged once (and once more when it changes), not on every tick; a board that is really
    unhealthy stops the loop through the reaping and claiming that follow."""

    def __init__(self, chores: Callable[[], None], *, log: Callable[[str], None]) -> None:
        self._chores = chores
        self.log = log
        #: the last failure, until the chores succeed again
        self.failing: str | None = None

    def run(self) -> None:
        try:
            self._chores()
        except (HermesError, OSError) as exc:
            text = exc.message if isinstance(exc, HermesError) else f"{exc.__class__.__name__}: {exc}"
            if text != self.failing:
                self.log(f"warning: per-tick maintenance failed: {text}; trying again every tick")
            self.failing = text
            return
        if self.failing is not None:
            self.log("per-tick maintenance works again")
            self.failing = None


class Dispatcher:
    """Dispatch one board. `run()` returns when stopped; see the module docstring for the loop."""

    def __init__(
        self,
        board: Board,
        settings: DispatchSettings,
        *,
        once: bool = False,
        until_idle: bool = False,
        one_pass: bool = False,
        max_start: int | None = None,
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
        #: one pass (`hermes kanban dispatch`): reclaim, adopt, start what can start, return; workers are left running
        self.one_pass = one_pass
        #: start at most this many workers in a pass (`--max`); None: up to max_spawn running
        self.max_start = max_start
        self.timeout = timeout
        self.break_lock_max_age = break_lock_max_age
        self._log = log
        self.env = dict(os.environ if env is None else env)
        self.result = DispatchResult(board=board.slug)
        self.epoch = 0
        self.deadline: float | None = None
        self.worker_name = f"dispatcher@{procs.HOST}:{os.getpid()}"
        #: `on_signals` is called once run() has installed its handlers (the CLI's start-up handlers stand down then)
        self.signals = StopSignals(on_signals)
        self.wakeups = WakePipe()
        self.doorbell: Bell | None = None
        #: a PostgreSQL board is served by a fleet of dispatchers, each registered (fleet.py), not one lease holder
        self.in_fleet = fleet.is_fleet(board)
        #: when a fleet dispatcher found the server out of reach (None: reachable)
        self._unreachable_since: float | None = None
        self.heartbeat = Heartbeat(board.paths, settings, wake=self.wakeups.ring, in_fleet=self.in_fleet)
        self.crew = Crew(board, settings, self.result, self.heartbeat, log=self.log)
        self.reaper = Reaper(board, settings, self.result, self.crew, log=self.log)
        self.adopter = Adopter(board, settings, self.result, self.crew, self.reaper, worker_name=self.worker_name,
                               log=self.log)
        self.launcher = Launcher(board, settings, self.result, self.crew, self.reaper, env=self.env,
                                 worker_name=self.worker_name, log=self.log, record_started=one_pass,
                                 watch=one_pass)
        #: the backup thread (None: backup_interval is off, or not started yet)
        self._backups: AutoBackup | None = None
        self.chores = Chores(self._per_tick_maintenance, log=self.log)
        #: a daemon (not a pass, --once or --until-idle, nor capped by --max): it starts what the bell announces
        #: before its chores (see _loop)
        self._continuous = not (once or until_idle or one_pass) and max_start is None
        #: whether the last wait ended on the doorbell (a board change), rather than a worker exit or a deadline
        self._rung = False
        #: (earliest lease expiry,) as _next_wake read it, for the maintenance that follows the wait (None: unread)
        self._expiry_hint: tuple[float | None] | None = None

    @property
    def workers(self) -> dict[int, Worker]:
        """The supervised workers by run id."""
        return self.crew.workers

    # -- public ------------------------------------------------------------------------------------------------------
    def run(self) -> DispatchResult:
        res = self.result
        self.signals.install()
        try:
            if self.timeout is not None:
                self.deadline = time.time() + self.timeout
            self.wakeups.open(signals=self.signals.installed)
            if self.s.doorbell:
                # the FIFO, or LISTEN on a PostgreSQL board (woken by writers on every host)
                self.doorbell = open_bell(self.board.db, self.board.paths, "dispatcher", warn=self._warn)
            # From here on no write of the main thread waits for the lock once we are stopping now.
            self.board.db.set_stop_check(self._stop_now)
            if self.break_lock_max_age is not None:
                res.broke_lock = leases.break_lock(self.board, max_age=self.break_lock_max_age)
                if res.broke_lock is not None:
                    self.log(f"broke the stale lease of {res.broke_lock.describe()}")
            got = self._join_fleet() if self.in_fleet else Standby(
                self.board, self.s, res, one_pass=self.once or self.until_idle or self.one_pass,
                deadline=self.deadline, signals=self.signals, wakeups=self.wakeups, doorbell=self.doorbell,
                log=self.log).acquire()
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
                self.heartbeat.start(self.epoch)
                if not self.one_pass:  # a pass returns at once: no backup thread to wait for (docs/dispatcher.md)
                    self._start_backups()
                with background_sync(self.board.slug, enabled=not (self.once or self.until_idle or self.one_pass),
                                     log=self.log):
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
            self.signals.restore()
            self.wakeups.close()
            res.stopped_at = time.time()

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def _warn(self, message: str) -> None:
        self.log(f"warning: {message}")

    def _stop_now(self) -> bool:
        """Whether the dispatcher is stopping now (a second signal, the deadline, or any signal before it holds the
        lease): the stop check of its connections, so no write waits for the lock any more."""
        if self.signals.count >= 2 or (self.signals.count and not self.epoch):
            return True
        return self.deadline is not None and time.time() >= self.deadline

    def _note_signals(self) -> None:
        """Say once that a signal arrived (the handler only counts it), and stop the backups accordingly."""
        if not self.signals.take_new():
            return
        name = self.signals.last_name
        if self._backups is not None:
            # No backup starts once we are stopping; a second signal also abandons the one in progress.
            self._backups.stop(abandon=self.signals.count >= 2)
        if self.signals.count == 1:
            self.log(f"{name}: stopping gracefully, waiting for {len(self.workers)} worker(s); "
                     "signal again to stop now and leave them running")
        else:
            self.log(f"{name}: stopping now")

    # -- the loop ----------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        res = self.result
        pass_done = False
        next_scan = 0.0
        while True:
            now = time.time()
            try:
                self.heartbeat.raise_failure()  # the lease was lost, or the heartbeat met a storage error
            except fleet.RegistrationLost as exc:
                self._rejoin_fleet(exc)
                continue
            self._note_signals()
            if self.signals.count >= 2:
                res.reason = StopReason.SIGNAL
                return
            if self.deadline is not None and now >= self.deadline:
                res.reason = StopReason.TIMEOUT
                self.log(f"timeout reached: stopping (workers still running: {len(self.workers)})")
                return
            try:
                scan = now >= next_scan
                spawning = self.signals.count == 0 and not pass_done
                first = spawning and self._continuous and bool(next_scan) and self._bell_rang()
                if first:
                    # The bell rang (a task may have become ready): start it before the chores (reaping, reclaims,
                    # adoption, the spool): none of them is needed to claim a ready task, and each costs round trips
                    # (docs/dispatcher.md, Pickup latency). Not on the first tick: adoption goes first there, so
                    # adopted workers count against max_spawn before anything is started.
                    self.launcher.fill(self.epoch)
                supervised = len(self.workers)
                self._maintenance(now, scan=scan)
                if scan:
                    next_scan = now + self.s.poll_interval
                # After a fill-first, the chores' writes that make a task ready (a recorded exit promoting a child,
                # a reclaim, a drained report) ring the bell again: the next wake starts it. Filling again now is
                # only needed when they freed a slot (a worker gone) or on a scan tick (adoption, belt and braces).
                if spawning and (not first or scan or len(self.workers) < supervised):
                    self.launcher.fill(self.epoch, limit=self.max_start)
                    pass_done = self.once or self.one_pass
            except fleet.RegistrationLost as exc:
                self._rejoin_fleet(exc)
                continue
            except BoardBusy as exc:
                if self._stop_now():
                    continue  # stopping now (the checks above end the loop): never wait for the lock
                # Transient: other writers held the board past our retry budget. Try again on the next tick.
                self.log(f"warning: {exc.message}")
                self._wait(min(1.0, self.s.poll_interval))
                continue
            except BoardUnreachable as exc:
                if not self.in_fleet or self._stop_now():
                    raise
                self._out_of_reach(exc)
                continue
            if self._unreachable_since is not None:
                self.log(f"the board is reachable again after {time.time() - self._unreachable_since:.1f}s")
                self._unreachable_since = None
            if self.one_pass and pass_done:
                # The pass is done: its workers (and those it adopted) are left running under their leases; the
                # next pass adopts the live ones again, and their exits are judged then (docs/dispatcher.md).
                res.reason = StopReason.PASS
                return
            if self.signals.count >= 1 and not self.workers and not self.reaper.unrecorded:
                self._note_signals()  # it may have come after the check at the top: still say so
                res.reason = StopReason.SIGNAL
                return
            if (self.once and pass_done and not any(not w.adopted for w in self.workers.values())
                    and not self.reaper.unrecorded):
                res.reason = StopReason.ONCE
                return
            if self.until_idle and self._idle():
                res.reason = StopReason.IDLE
                return
            try:
                self._wait(self._next_wake(time.time(), spawning=self.signals.count == 0 and not pass_done))
            except BoardUnreachable as exc:
                if not self.in_fleet:
                    raise
                self._out_of_reach(exc)

    def _per_tick_maintenance(self) -> None:
        """Board chores done once per loop iteration, before workers are reaped (so a completion that was spooled
        because the board was busy is applied before its worker's exit is judged). The spool drain goes here."""
        drain.drain_if_healthy(self.board, log=self.log)

    def _maintenance(self, now: float, *, scan: bool) -> None:
        # First the exit statuses the board could not take before: ahead of the spool drain (which would otherwise
        # apply our own spooled exit 0), of the scan and of reclaims (which would judge those runs anew). While the
        # board is still locked the drain is skipped: it would take a backup, then fail on the same lock.
        if self.reaper.retry_unrecorded():
            self.chores.run()
        self.reaper.reap_exited()
        self.crew.take_fenced(now)
        self.crew.enforce(now)
        if scan:
            if self.doorbell is not None and self.doorbell.repair():
                self.log("warning: the doorbell FIFO had vanished; re-created it")
            # Before reclaiming: a worker that provably still runs is adopted (and its lease extended) rather than
            # reclaimed just because its dispatcher was away for longer than its lease.
            self._scan_runs()
            self.launcher.note_unstartable()
        # The earliest lease expiry as the last _next_wake read it (the wait was timed by it): while it is not due,
        # no lease that existed then is, and one taken since is read by the next _next_wake. Read again when it is
        # due, on a scan tick, or when there is none (a BoardBusy retry, the first tick): one round trip fewer per
        # wake-up.
        hint, self._expiry_hint = self._expiry_hint, None
        if scan or hint is None or (hint[0] is not None and hint[0] < now):
            expiry = dsql.earliest_lease_expiry(self.board.db)
            if expiry is not None and expiry < now:
                self.crew.reclaim_expired()

    def _scan_runs(self) -> None:
        self.adopter.scan_runs()

    def _unsupervise(self, w: Worker) -> None:
        self.crew.unsupervise(w)

    def _idle(self) -> bool:
        """Nothing of ours running, nothing dispatchable now or by a retry, and nothing running on the board at
        all: a run we cannot supervise (another host, or a pid never recorded) ends by report or lease expiry,
        and its task may then need us again."""
        if self.workers or self.reaper.unrecorded:
            return False
        now = time.time()
        db = self.board.db
        selection = self.launcher.selection
        if selection.dispatchable(db, now, limit=1):
            return False
        if dsql.earliest_lease_expiry(db) is not None:
            return False
        return selection.next_retry_at(db, after=now) is None

    def _next_wake(self, now: float, *, spawning: bool) -> float:
        until = now + self.s.poll_interval
        if self.deadline is not None:
            until = min(until, self.deadline)
        db = self.board.db
        if spawning and len(self.workers) < self.s.max_spawn:
            retry = self.launcher.selection.next_retry_at(db, after=now)
            if retry is not None:
                until = min(until, retry)
        expiry = dsql.earliest_lease_expiry(db)
        self._expiry_hint = (expiry,)
        if expiry is not None and expiry >= now:
            until = min(until, expiry + 0.005)
        until = self.crew.next_wake(now, until)
        if self.reaper.unrecorded:
            until = min(until, now + RETRY_RECORD_S)
        return max(0.0, until - now)

    def _bell_rang(self) -> bool:
        """Whether the bell rang since the last wait: the wait's own answer, or (woken by a worker's exit or a
        deadline) a ring that came just after it, so that wake-up too starts a ready task before the chores."""
        if self._rung or self.doorbell is None:
            return self._rung
        poller = select.poll()
        poller.register(self.doorbell.fileno(), select.POLLIN)
        if not poller.poll(0):
            return False
        self.doorbell.drain()  # what it announced is read from the board right after this
        return True

    def _wait(self, timeout: float) -> None:
        poller = self.wakeups.poller()
        if self.doorbell is not None:
            poller.register(self.doorbell.fileno(), select.POLLIN)
        self.crew.register(poller)
        ready = poller.poll(max(0, int(timeout * 1000 + 0.999)))
        self._rung = self.doorbell is not None and any(fd == self.doorbell.fileno() for fd, _ in ready)
        self.wakeups.drain()
        if self.doorbell is not None:
            self.doorbell.drain()

    # -- a fleet (PostgreSQL board: fleet.py) -----------------------------------------------------------------------
    def _join_fleet(self) -> tuple[leases.DispatcherLease, None] | None:
        """Register as one of the board's dispatchers (instead of taking the one-dispatcher lease). Returns our
        registration in the lease's shape (its id is the epoch the claims are fenced by)."""
        if self.signals.count:
            self.result.reason = StopReason.SIGNAL
            self.log(f"{self.signals.last_name}: stopping (nothing was started)")
            return None
        reg = fleet.register(self.board, lease_s=self.s.lease_grace)
        self._fleet_joined(reg.id)
        self.log(f"registered as {reg.describe()}; serving the board with the other registered dispatchers")
        _, _, started = procs.identity()
        return leases.DispatcherLease(reg.host, reg.pid, started, reg.id, reg.started_at, reg.started_at), None

    def _fleet_joined(self, dispatcher_id: int) -> None:
        self.launcher.fleet_id = dispatcher_id
        self.adopter.foreign = lambda: fleet.foreign_runs(self.board, dispatcher_id)

    def _out_of_reach(self, exc: BoardUnreachable) -> None:
        """The PostgreSQL server cannot be reached (a partition, a restart): keep supervising our workers (their
        reports spool on this host, exits are kept and spooled), say so once, and try again shortly. Our run leases
        run on by the server's clock meanwhile: past them the other dispatchers reclaim our runs."""
        if self._unreachable_since is None:
            self._unreachable_since = time.time()
            self.log(f"warning: {exc.message}; supervising {len(self.workers)} worker(s) meanwhile, retrying")
        self._wait(min(1.0, self.s.poll_interval))

    def _rejoin_fleet(self, exc: fleet.RegistrationLost) -> None:
        """Our registration was removed by another dispatcher (it lapsed): stop our workers (their runs are, or
        soon will be, reclaimed; their reports would be refused), then register anew, taking our open runs along so
        no other dispatcher adopts them while they stop."""
        self.log(f"warning: {exc.message}")
        now = time.time()
        for w in list(self.workers.values()):
            if w.term_at is None and not w.reported:
                self.log(f"stopping {w.task_id} run {w.run_id} pid {w.pid}: this dispatcher's registration lapsed")
                w.terminate("fenced", now)
        try:
            reg = fleet.register(self.board, lease_s=self.s.lease_grace, previous=self.epoch)
        except (BoardBusy, BoardUnreachable) as again:
            # Still out of reach (or busy): our workers are stopping; try again on the next tick.
            self.log(f"warning: could not register anew ({again.message}); trying again")
            self._wait(min(1.0, self.s.poll_interval))
            return
        self.epoch = reg.id
        self.result.epoch = reg.id
        self.heartbeat.rebind(reg.id)
        self._fleet_joined(reg.id)
        self.log(f"registered anew as {reg.describe()}")

    # -- backups -----------------------------------------------------------------------------------------------------
    def _start_backups(self) -> None:
        if self.s.backup_interval is None:
            return
        self._backups = AutoBackup(self.board.paths, self.s.backup_interval, log=self.log, on_exit=self.wakeups.ring)
        self._backups.start()

    def _stop_backups(self) -> None:
        """No new backup from here on. A graceful stop (idle, once, the first signal) waits for a backup in progress
        (a second signal or the --timeout deadline meanwhile abandons it); any other stop (timeout, a second signal,
        lease lost, storage error) abandons it (AutoBackup.stop_and_wait)."""
        ab = self._backups
        if ab is None:
            return
        res = self.result
        graceful = res.error is None and (
            res.reason in (StopReason.IDLE, StopReason.ONCE)
            or (res.reason == StopReason.SIGNAL and self.signals.count < 2)
        )
        ab.stop_and_wait(graceful=graceful, signals=self.signals, deadline=self.deadline, wakeups=self.wakeups,
                         note_signals=self._note_signals)
        res.counts["backups"] += ab.taken
        res.counts["backup_failed"] += ab.failed

    # -- stopping ----------------------------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        res = self.result
        self._stop_backups()  # first: the heartbeat keeps the lease while a graceful stop waits for a backup
        self.heartbeat.stop()
        self.reaper.flush()
        self.crew.leave_running()
        if self.epoch and not isinstance(res.error, LeaseHeld):
            try:
                if self.in_fleet:
                    fleet.unregister(self.board, self.epoch, reason=str(res.reason))
                else:
                    leases.release(self.board, self.epoch, reason=str(res.reason))
            except StorageError as exc:
                self.log(f"warning: could not release the dispatcher lease ({exc.message}); a dispatcher on this "
                         f"host takes it over once this process has exited, one elsewhere after "
                         f"{self.s.lease_grace:g}s")
