"""Holding the board: taking the dispatcher lease (or standing by while a live dispatcher holds it), then keeping it.

Standby: the lease is taken at once when it is free, stale, or held by a dispatcher of this host that is provably
gone (lease.py). Held by a live one: a one-pass run (`once`, `until_idle`) stops as `skipped`; a long-running one
stands by, woken by the holder's exit (pidfd), the doorbell (a release rings it), signals and the time its lease would
lapse, checking the lease with a read (never the write lock) until it may take over.

Heartbeat: a thread with its own database connection refreshes the dispatcher lease and extends the run leases of the
worker processes the dispatcher can see alive, so a long spawn or reap never lets a lease lapse. What it finds (the
lease lost, a run taken away, a storage error) it hands to the main thread, and rings the wake pipe.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable

from ..core import procs
from ..core.errors import (
    BoardBusy,
    BoardUnreachable,
    HermesError,
    LeaseHeld,
    NotFound,
    StaleRun,
    StorageError,
    WriteInterrupted,
)
from ..core.paths import BoardPaths
from ..domain.board import Board
from ..domain.config import DispatchSettings
from ..live.bells import Bell
from . import fleet
from . import lease as leases
from .lease import DispatcherLease
from .result import DispatchResult, StopReason
from .wakeups import StopSignals, WakePipe, block_stop_signals, close_fd


class Standby:
    """Takes the board's lease for one dispatcher run, standing by while a live holder keeps it."""

    def __init__(
        self,
        board: Board,
        settings: DispatchSettings,
        result: DispatchResult,
        *,
        one_pass: bool,
        deadline: float | None,
        signals: StopSignals,
        wakeups: WakePipe,
        doorbell: Bell | None,
        log: Callable[[str], None],
    ) -> None:
        self.board = board
        self.s = settings
        self.result = result
        self.one_pass = one_pass
        self.deadline = deadline
        self.signals = signals
        self.wakeups = wakeups
        self.doorbell = doorbell
        self.log = log

    def acquire(self) -> tuple[DispatcherLease, DispatcherLease | None] | None:
        """Take the board's lease. A live holder: a one-pass run returns None (skipped); a long-running one stands by
        until the lease is released, lapses or its holder's process is gone, and returns None only when a signal or
        the --timeout ends the wait. The lease is read first: a write (BEGIN IMMEDIATE) only when it can be taken."""
        res = self.result
        standing_by = False
        while True:
            if self.signals.count:
                res.reason = StopReason.SIGNAL
                self.log(f"{self.signals.last_name}: stopping"
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
                if self.one_pass:
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
            self._wait(holder)

    def _wait(self, holder: DispatcherLease | None) -> None:
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
            poller = self.wakeups.poller()
            if self.doorbell is not None:
                poller.register(self.doorbell.fileno(), select.POLLIN)
            if fd >= 0:
                poller.register(fd, select.POLLIN)
            # at least 10 ms: a lease that lapses "now" by our clock but was just refreshed must not spin the loop
            poller.poll(max(10, int((until - now) * 1000 + 0.999)))
        finally:
            close_fd(fd)
        self.wakeups.drain()
        if self.doorbell is not None:
            self.doorbell.drain()


class Heartbeat:
    """The heartbeat thread (see the module docstring). Shared with the main thread under a lock: the runs to keep
    alive, the runs it found taken away (fenced), and why the dispatcher must stop (lease lost, a storage error)."""

    def __init__(self, paths: BoardPaths, settings: DispatchSettings, *, wake: Callable[[], None],
                 in_fleet: bool = False) -> None:
        self.paths = paths
        self.s = settings
        self._wake = wake
        #: a PostgreSQL board (fleet.py): `epoch` is our registration id, heartbeated instead of the board lease
        self.in_fleet = in_fleet
        self._registration_lost = False
        self.epoch = 0
        self._lock = threading.Lock()
        self._beats: dict[int, tuple[str, int, float | None]] = {}
        self._fenced: set[int] = set()
        self._lease_lost: str | None = None
        self._fatal: HermesError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the main thread's side --------------------------------------------------------------------------------------
    def start(self, epoch: int) -> None:
        self.epoch = epoch
        self._thread = threading.Thread(target=self._main, name="dispatcher-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def watch(self, run_id: int, task_id: str, pid: int, create_time: float | None) -> None:
        """Extend this run's lease while its process is alive."""
        with self._lock:
            self._beats[run_id] = (task_id, pid, create_time)

    def forget(self, run_id: int) -> None:
        with self._lock:
            self._beats.pop(run_id, None)
            self._fenced.discard(run_id)

    def take_fenced(self) -> set[int]:
        """The runs whose lease extension was refused since the last call (closed, or taken away)."""
        with self._lock:
            fenced, self._fenced = self._fenced, set()
        return fenced

    def rebind(self, epoch: int) -> None:
        """A fleet dispatcher registered anew: heartbeat the new registration from now on."""
        with self._lock:
            self.epoch = epoch
            self._registration_lost = False

    def raise_failure(self) -> None:
        """Raise what the thread found that stops the dispatcher: LeaseHeld (the lease is lost) or a storage error;
        in a fleet, RegistrationLost (our registration was removed: the dispatcher registers anew)."""
        with self._lock:
            lost, fatal, gone, epoch = self._lease_lost, self._fatal, self._registration_lost, self.epoch
        if gone:
            raise fleet.RegistrationLost(f"dispatcher {epoch}'s registration was removed by another dispatcher (it "
                                         "lapsed: this one was paused or cut off past its lease)")
        if lost is not None:
            raise LeaseHeld(lost)
        if fatal is not None:
            raise fatal

    # -- the thread --------------------------------------------------------------------------------------------------
    def _fail(self, exc: HermesError) -> None:
        with self._lock:
            self._fatal = exc
        self._wake()

    def _main(self) -> None:
        block_stop_signals()
        paths = self.paths
        try:
            board = Board.open(paths.slug, db_path=str(paths.db))
        except HermesError as exc:
            self._fail(exc)
            return
        # A stop never waits for this thread's refresh to get the write lock (stop() joins it).
        board.db.set_stop_check(self._stop.is_set)
        try:
            while not self._stop.wait(self.s.refresh_interval):
                self._beat(board)
        finally:
            board.close()

    def _beat(self, board: Board) -> None:
        try:
            if self.in_fleet:
                with self._lock:
                    epoch = self.epoch
                held, _ = fleet.beat(board, epoch)
                if not held:
                    with self._lock:
                        self._registration_lost = self.epoch == epoch  # unless re-registered meanwhile
                    self._wake()
                    return  # no run of ours is extended while we are not registered
            elif not leases.refresh(board, self.epoch):
                lease = leases.read_lease(board)
                who = "nobody" if lease is None else lease.describe()
                with self._lock:
                    self._lease_lost = f"dispatcher lease (epoch {self.epoch}) was lost; it is now held by {who}"
                self._wake()
                return
        except BoardBusy:
            return  # try again on the next beat; the grace period is several beats long
        except BoardUnreachable as exc:
            if not self.in_fleet:
                self._fail(exc)
            return  # in a fleet, a partition or a server restart: beat again when it is back (others judge our lapse)
        except StorageError as exc:
            self._fail(exc)
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
            except BoardUnreachable as exc:
                if not self.in_fleet:
                    self._fail(exc)
                return  # in a fleet: the leases run on by the server's clock; we extend them once it is back
            except StorageError as exc:
                self._fail(exc)
                return
