"""Writers of one board wait in the kernel's flock queue, not by polling SQLite's write lock.

Every write transaction (store/connection.py: Database.write) takes an exclusive flock on `.<db name>.write.lock`
beside the board before BEGIN IMMEDIATE and lets it go right after COMMIT or ROLLBACK. A writer that finds it taken
sleeps in flock(2) until the holder lets go, and the kernel wakes the next waiter then; SQLite's write lock is
normally free by the time it is asked for.

Why: waiting on SQLite's lock means polling it (fair_busy_handler: every 0.2-2 ms, so a third writer is never
starved the way SQLite's backing-off busy_timeout starved it). With eight workers on two cores that polling was
most of the cost of contention: each waiter wakes ~900 times a second, tries the lock, and takes a core from the
process that holds it (B1 FULL, 8 workers: -27 % against 1 worker; CPU per task doubled, 8 context switches per
task). Queued in flock, waiters cost nothing until their turn, and the queue stays fair: a releaser that comes
straight back finds the woken waiters ahead of it.

What the flock is not: it is not what makes writes safe. SQLite's own lock is still taken (BEGIN IMMEDIATE), so a
writer that skips the queue (another tool, an older hermes, a read-only directory where the lock file cannot be
made, a forked child) is merely unordered, never unsafe. A process killed while holding the flock drops it with its
fds. And a holder that stops without dying (SIGSTOP, a debugger) must not block every writer forever, as a plain
blocking flock would: a waiter that has not got the flock after its timeout (the busy timeout, at most 1 s) goes
on without it, straight to SQLite's lock and the busy handler, whose timeout and BoardBusy are exactly what they
were before; while that wait is still queued, the connection's later writes skip the queue too.

flock(2) has no timeout, so the blocking call runs in a helper thread of this queue while the caller waits for it
with one. The thread is started on the first wait and lives as long as the queue; it only ever blocks
in flock or on its condition.
"""

from __future__ import annotations

import _thread  # bare locks: threading's own Lock type, without importing threading (see _wait)
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
#: bumped in a forked child: a queue made before the fork has no helper thread there and shares its flock (one open
#: file description) with the parent, so the child writes without it (cheaper than os.getpid() on every write)
_forks = [0]
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


def lock_path(db: Path) -> Path:
    return db.with_name(f".{db.name}.write.lock")


def _open(path: Path) -> int | None:
    try:
        return os.open(path, _FLAGS, 0o600)
    except OSError:
        return None  # read-only directory, or a non-file in its place: write without the queue


class WriteQueue:
    """The flock queue in front of one board's write lock, for one connection. Not shared between threads (as the
    Database that owns it is not)."""

    def __init__(self, db: Path, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._fork = _forks[0]
        self._path = lock_path(db)
        #: the caller's own open file description: the fast path takes the flock on it without any thread
        self._fd = _open(self._path)
        #: a second open file description for the helper thread (flock conflicts between the two, as between
        #: processes, so a lock held through either one excludes every other writer)
        self._helper_fd: int | None = None
        #: the fd whose flock we hold now, if any
        self._held: int | None = None
        self._thread: threading.Thread | None = None
        # Two bare locks used as one-shot signals (cheaper than a Condition on this path): _request wakes the
        # helper, _granted tells the caller the helper holds the flock for it. _state guards the three flags.
        self._request = _thread.allocate_lock()
        self._request.acquire()
        self._granted = _thread.allocate_lock()
        self._granted.acquire()
        self._state = _thread.allocate_lock()
        self._outstanding = False  # a request the helper has not finished (it may be inside flock(2))
        self._abandoned = False  # the caller stopped waiting: the helper lets go as soon as it gets the flock
        self._closing = False

    def enter(self, stop: Callable[[], bool] | None = None) -> None:
        """Take the flock, waiting at most the timeout; without it after that (see the module doc). `stop`, when
        given, is asked every 50 ms: true ends the wait at once, as a timeout does (a dispatcher's second signal)."""
        if self._fd is None or self._held is not None or self._fork != _forks[0]:
            return  # no lock file, re-entered, or a forked child (the helper thread did not survive the fork)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._held = self._fd
            return
        except BlockingIOError:
            pass
        except OSError:
            return  # e.g. ENOLCK: write without the queue
        self._wait(stop)

    def _wait(self, stop: Callable[[], bool] | None) -> None:
        with self._state:
            if self._outstanding:
                # An earlier wait timed out and its flock call is still queued: do not queue behind it (it lets
                # go of the lock as soon as it gets it); this write goes straight to SQLite's lock instead.
                return
            if self._helper_fd is None:
                self._helper_fd = _open(self._path)
                if self._helper_fd is None:
                    return
            if self._thread is None:
                import threading  # here: only a contended write needs the helper thread (~1 ms to import)

                self._thread = threading.Thread(target=self._helper, name="hermes-write-queue", daemon=True)
                self._thread.start()
            self._outstanding, self._abandoned = True, False
        self._request.release()
        granted = False
        try:
            if stop is None:
                granted = self._granted.acquire(timeout=self._timeout)
            else:
                deadline = time.monotonic() + self._timeout
                while not granted and not stop() and (left := deadline - time.monotonic()) > 0:
                    granted = self._granted.acquire(timeout=min(0.05, left))
        finally:
            if not granted:  # timed out, or interrupted (e.g. KeyboardInterrupt) while queued
                with self._state:
                    granted = self._granted.acquire(blocking=False)  # granted just as we gave up
                    self._abandoned = not granted
            if granted:
                self._held = self._helper_fd

    def _helper(self) -> None:
        fd = self._helper_fd
        assert fd is not None
        while True:
            self._request.acquire()
            if self._closing:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                ok = True
            except OSError:
                ok = False  # cannot queue: the caller times out and goes on without the queue
            with self._state:
                self._outstanding = False
                if ok and (self._abandoned or self._closing):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                elif ok:
                    self._granted.release()
                if self._closing:
                    break
        os.close(fd)

    def leave(self) -> None:
        """Let the next writer in (after COMMIT or ROLLBACK)."""
        fd, self._held = self._held, None
        if fd is not None and self._fork == _forks[0]:  # a forked child's unlock would unlock the parent's too
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.leave()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._fork != _forks[0]:
            return  # a forked child: no helper here, and its locks may have been copied held
        with self._state:
            self._closing = True
            if self._thread is None:
                if self._helper_fd is not None:
                    os.close(self._helper_fd)
                    self._helper_fd = None
            elif not self._outstanding:
                self._request.release()  # wake the idle helper so it closes its fd and ends
        # an outstanding helper ends (and closes its fd) once its flock(2) returns
