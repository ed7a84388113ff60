"""The dispatcher's periodic backups (docs/dispatcher.md "Automatic backups").

A board whose file is destroyed can only be restored to its newest backup plus what the spool and the damaged
board's own log still hold (docs/operations.md "Restore"), so the dispatcher keeps the newest backup younger than
`backup_interval`: whenever the newest verified backup (`backup.latest`, whoever took it: this dispatcher, cron,
`reconcile-completions`) is older than the interval and the board is healthy, it takes one with `backup.create`
(the same verification and the same keep-newest-N rotation as `hermes kanban backup`).

It never stalls dispatching: backups run in a thread of their own that opens its own Board for each attempt (APSW
connections belong to one thread; the dispatcher's loop and heartbeat keep theirs), so at most one backup runs at a
time and the loop never waits for one. A failure is one warning line and never stops the dispatcher; the next
attempt follows after RETRY_FIRST_S, doubling on each further failure, never later than the interval itself.

A backup already due when the dispatcher starts is taken (unless the stop abandons it), even by a dispatcher that
stops at once (`--until-idle` from cron on an idle board), so such runs keep the board backed up too.

Stopping: `stop()` lets no new backup start. A backup in progress either finishes (a graceful stop waits for it) or
is abandoned (`abandon=True`): the copy stops at its next step, and `backup.create` removes its temp file, so an
abandoned backup leaves nothing behind. A copy that is already being verified (integrity_check of the copy) is not
interruptible and finishes first; so does a board small enough to be copied in one step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import apsw

from ..core.errors import HermesError, NotFound, StorageError
from ..core.paths import BoardPaths
from ..domain.board import Board
from ..durability import backup
from ..durability import doctor as health
from ..durability.backup import BackupInfo
from .wakeups import StopSignals, WakePipe, block_stop_signals

#: first retry after a failed (or skipped) backup; each further failure doubles it, up to the interval
RETRY_FIRST_S = 60.0
#: how long a stop waits for an abandoned backup to notice (it stops at the copy's next step, or after verifying)
ABANDON_WAIT_S = 30.0
#: the `reason` recorded in the backup's .json
REASON = "dispatcher"


class Abandoned(Exception):
    """Raised from the copy's progress callback to stop a backup in progress (create() removes its temp file)."""


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable: the loop returns at GiB")


class AutoBackup:
    """One thread that keeps the board's newest backup younger than `interval` seconds (see the module docstring).

    The counters are written by the thread and read by the dispatcher after `join()`.
    """

    def __init__(
        self,
        paths: BoardPaths,
        interval: float,
        *,
        log: Callable[[str], None],
        on_exit: Callable[[], None] | None = None,
        keep: int | None = None,
    ) -> None:
        self.paths = paths
        self.interval = interval
        self.keep = keep
        self._log = log
        self._on_exit = on_exit
        self._stop = threading.Event()
        self._abandon = threading.Event()
        #: set when the thread has finished (before on_exit is called), so a waiter woken by on_exit sees it
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None
        #: a backup attempt is under way (read from the dispatcher's thread to say what a stop waits for)
        self.busy = False
        self.taken = 0
        self.failed = 0
        self.abandoned = 0
        self._failing = 0  # consecutive failures: the retry delay doubles with each

    # -- control (dispatcher thread) -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread. A backup already due now is decided here, in the caller's thread, so it is taken even
        when the dispatcher stops at once (`--until-idle` on an idle board): a graceful stop waits for it."""
        due_now = self._due() <= time.time()
        self.busy = due_now
        self._thread = threading.Thread(target=self._main, args=(due_now,), name="dispatcher-backup", daemon=True)
        self._thread.start()

    def stop(self, *, abandon: bool) -> None:
        """No new backup starts from now on; with `abandon`, a copy in progress stops at its next step."""
        self._stop.set()
        if abandon:
            self._abandon.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop_and_wait(self, *, graceful: bool, signals: StopSignals, deadline: float | None, wakeups: WakePipe,
                      note_signals: Callable[[], None]) -> None:
        """The dispatcher is stopping: no new backup from here on. A graceful stop waits for a backup in progress
        (a second signal or the --timeout `deadline` meanwhile abandons it); any other stop abandons it. Abandoning
        leaves no partial backup (see the module docstring). The wait is on the dispatcher's wake pipe, which the
        thread rings as it exits (`on_exit`) and signals ring too; `note_signals` announces a signal."""
        self.stop(abandon=not graceful)
        if self.busy and not self.finished.is_set():
            self._log("waiting for the backup in progress to finish" if graceful
                      else "abandoning the backup in progress")
        give_up_at = None if graceful else time.time() + ABANDON_WAIT_S
        poller = wakeups.poller()
        # The thread sets `finished` before it rings the wake pipe, so this wait cannot miss its end.
        while not self.finished.is_set():
            note_signals()
            now = time.time()
            if give_up_at is None and (signals.count >= 2 or (deadline is not None and now >= deadline)):
                self.stop(abandon=True)
                self._log("abandoning the backup in progress")
                give_up_at = now + ABANDON_WAIT_S
            if give_up_at is not None and now >= give_up_at:
                # Stuck in a system call (a hung disk): the copy is only ever a temp file, never a backup, so leave
                # the daemon thread behind rather than hang the stop.
                self._log(f"warning: the backup thread did not stop within {ABANDON_WAIT_S:g}s; leaving it "
                          f"(a temp file .kanban-*.tmp-* may remain in {self.paths.backups_dir})")
                break
            until = give_up_at if give_up_at is not None else deadline
            poller.poll(-1 if until is None else max(0, int((until - now) * 1000 + 0.999)))
            wakeups.drain()
        else:
            self.join()

    def retry_delay(self) -> float:
        """How long after the last of `self._failing` consecutive failures the next attempt comes."""
        return min(self.interval, RETRY_FIRST_S * 2 ** max(0, self._failing - 1))

    # -- the thread ----------------------------------------------------------------------------------------------------
    def _main(self, due_now: bool) -> None:
        block_stop_signals()
        try:
            not_before = 0.0
            while due_now or not self._stop.is_set():
                if not due_now:
                    delay = max(self._due(), not_before) - time.time()
                    if delay > 0:
                        # Wake at the due time and look again: someone else may have taken a backup meanwhile.
                        self._stop.wait(delay)
                        continue
                due_now = False
                not_before = 0.0 if self.attempt() else time.time() + self.retry_delay()
        finally:
            self.finished.set()
            if self._on_exit is not None:
                self._on_exit()

    def _due(self) -> float:
        """When the next backup is due: the newest verified backup's time plus the interval (0: now)."""
        try:
            newest = backup.latest(self.paths)
        except NotFound:
            return 0.0  # never backed up
        except (OSError, HermesError):
            return 0.0  # the backups cannot be read: the attempt says why, and the retry delay applies
        return newest.created_at + self.interval

    def attempt(self) -> bool:
        """One backup, now, in the calling thread (the backup thread calls it when one is due). True when it was
        taken (or given up because the dispatcher is stopping), False when it failed (logged; see retry_delay)."""
        self.busy = True
        try:
            return self._attempt()
        finally:
            self.busy = False

    def _attempt(self) -> bool:
        try:
            info = self._take()
        except Abandoned:
            self.abandoned += 1
            self._failing = 0
            self._log("backup abandoned: the dispatcher is stopping (its temp file was removed; no backup kept)")
            return True
        except (HermesError, OSError, apsw.Error) as exc:
            # Never fatal: the dispatcher carries on, and the retry delay bounds how often this line comes.
            self.failed += 1
            self._failing += 1
            text = exc.message if isinstance(exc, HermesError) else f"{exc.__class__.__name__}: {exc}"
            self._log(f"warning: backup failed: {text}; next attempt in {_secs(self.retry_delay())}")
            return False
        self._failing = 0
        if info is None:
            return True  # stopped before it began
        self.taken += 1
        self._log(f"backup: {info.path} ({human_size(info.size)}, {info.seconds or 0.0:.3f}s)")
        return True

    def _take(self) -> BackupInfo | None:
        with Board.open(self.paths.slug, db_path=str(self.paths.db), create=False) as board:
            quick = health.quick_health(board)
            if not quick.ok:
                raise StorageError(f"board {self.paths.slug} is not healthy ({quick.text}); no backup taken")
            if self._abandon.is_set():
                return None  # the dispatcher is stopping at once: no new backup
            return backup.create(board, keep=self.keep, reason=REASON, progress=self.progress)

    def progress(self, done: int, total: int) -> None:
        """The copy's progress hook (backup.create -> store/health.backup_into calls it after each step): the one
        place a copy can stop cleanly. Raises Abandoned once the dispatcher asked to abandon."""
        if self._abandon.is_set():
            raise Abandoned()


def _secs(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
