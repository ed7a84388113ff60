"""The FIFO doorbell: writers ring after COMMIT; each reader owns one FIFO in `<board dir>/notify/`.

A ring is one byte written with O_WRONLY|O_NONBLOCK|O_NOFOLLOW into every reader's FIFO. It never blocks and never
fails a commit: ENXIO (no reader has it open), EAGAIN (pipe full: the reader is already going to wake) and EPIPE
(the reader closed it between our open and our write) are ignored, and so is every other OSError. The doorbell
carries no data; readers keep a cursor on `events.id` and catch up, so a lost ring costs latency, never an event.

Safety:
- Nothing is followed through a symlink: the `notify/` directory is opened O_NOFOLLOW|O_DIRECTORY and every FIFO is
  opened relative to it with O_NOFOLLOW; after opening, fstat must say FIFO, or nothing is written.
- A reader publishes its FIFO only once it holds it open: it is made under a temporary name, opened O_RDWR, then
  renamed to `<pid>.<name>.<rand>.fifo`. So a `*.fifo` whose open fails with ENXIO has no reader, ever again: the
  writer that sees it removes it (dead readers' FIFOs are cleaned up by the next ring). Temporary names whose pid is
  gone (a reader killed between mkfifo and rename) are removed too.
- SIGPIPE: Python ignores it by default, so a write to a just-closed FIFO gives EPIPE. If the host program restored
  the default action, the ring blocks SIGPIPE for the duration of its writes and discards a pending one, so a ring
  can never kill the writer.
- Readers wait with poll(2), not select(2), so a reader in a process with more than 1024 fds still works.

Linux semantics relied on: opening a FIFO O_RDWR never blocks and keeps a writer on it, so the reader never sees
EOF/POLLHUP when writers come and go and `wait` never busy-loops.
"""

from __future__ import annotations

import _thread  # its lock is threading.Lock's; importing threading costs every hot command ~1 ms
import errno
import os
import select
import signal
import stat
from pathlib import Path

from ..core.paths import ensure_private_dir

RING = b"\x01"
FIFO_SUFFIX = ".fifo"
TMP_SUFFIX = ".fifo-tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RING_FLAGS = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process: alive, just not ours to signal
    return True


def _owner_pid(name: str) -> int | None:
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def ring(notify_dir: Path) -> int:
    """Ring every reader's doorbell. Returns how many readers were woken. Never raises, never blocks."""
    try:
        dfd = os.open(notify_dir, _DIR_FLAGS)
    except OSError:
        return 0  # no notify dir (nobody ever listened), or a symlink/non-directory in its place: nobody to wake
    try:
        with _sigpipe_blocked():
            return _ring_all(dfd)
    finally:
        os.close(dfd)


def _ring_all(dfd: int) -> int:
    woken = 0
    try:
        names = [e.name for e in os.scandir(dfd)]
    except OSError:
        return 0
    for name in names:
        if name.endswith(TMP_SUFFIX):
            _reap_tmp(dfd, name)
            continue
        if not name.endswith(FIFO_SUFFIX):
            continue
        try:
            fd = os.open(name, _RING_FLAGS, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                # A published FIFO with no reader: its reader is gone for good (see the module docstring).
                _unlink(dfd, name)
            # ELOOP (a symlink), ENOENT (reaped meanwhile), EACCES...: skip it, never fail the commit.
            continue
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                continue  # a regular file or device named *.fifo: never write into it
            os.write(fd, RING)
            woken += 1
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                woken += 1  # the pipe is full of rings: the reader will wake anyway
            # EPIPE: the reader closed it just now; it catches up from its cursor when it comes back.
        finally:
            os.close(fd)
    return woken


def _unlink(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        return  # another writer (or the reader itself) removed it first


def _reap_tmp(dfd: int, name: str) -> None:
    pid = _owner_pid(name)
    if pid is not None and not _pid_alive(pid):
        _unlink(dfd, name)


class _sigpipe_blocked:
    """Block SIGPIPE around the writes, unless it is already ignored (Python's default)."""

    def __init__(self) -> None:
        self.active = False

    def __enter__(self) -> None:
        try:
            ignored = signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
        except ValueError:
            ignored = False
        if ignored:
            return
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
        self.active = signal.SIGPIPE not in old

    def __exit__(self, *exc: object) -> None:
        if not self.active:
            return
        # Discard a SIGPIPE our own write raised while blocked, then restore the mask.
        while signal.SIGPIPE in signal.sigpending():
            signal.sigtimedwait({signal.SIGPIPE}, 0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPIPE})


class Doorbell:
    """A reader's end: one FIFO owned by this process, opened O_RDWR|O_NONBLOCK.

    Use as a context manager; `close()` removes the FIFO. `wait()` may be called from one thread while another
    calls `poke()` to wake it (e.g. to stop a reader thread promptly).
    """

    def __init__(self, notify_dir: Path, name: str) -> None:
        self.notify_dir = notify_dir
        self.safe_name = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "reader"
        self.fd = -1
        self.path = notify_dir
        self._lock = _thread.allocate_lock()
        self._open()

    def _open(self) -> None:
        ensure_private_dir(self.notify_dir)
        stem = f"{os.getpid()}.{self.safe_name}.{os.urandom(4).hex()}"
        tmp = self.notify_dir / f"{stem}{TMP_SUFFIX}"
        final = self.notify_dir / f"{stem}{FIFO_SUFFIX}"
        os.mkfifo(tmp, 0o600)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            _silent_unlink(tmp)
            raise
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{tmp} is not a FIFO")
        # Publish only now that we hold it open: a published FIFO without a reader is always garbage.
        os.rename(tmp, final)
        self.fd, self.path = fd, final

    def fileno(self) -> int:
        return self.fd

    def wait(self, timeout: float | None) -> bool:
        """Block until rung (or poked) or `timeout` seconds pass. Returns whether it was rung. Coalesces rings."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
        if ready:
            self.drain()
            return True
        return False

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            return

    def poke(self) -> None:
        """Wake a thread blocked in `wait` (we hold a write end ourselves). Safe from another thread and from a
        signal handler: it never blocks on the lock (a poke that finds it taken is dropped, because whoever holds
        it is closing or re-opening the FIFO and the waiter is about to return anyway)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self.fd >= 0:
                os.write(self.fd, RING)
        except BlockingIOError:
            return  # full of rings already: the waiter wakes anyway
        finally:
            self._lock.release()

    def healthy(self) -> bool:
        """Whether our FIFO is still published under its name (it can vanish if its directory was removed)."""
        if self.fd < 0:
            return False
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        mine = os.fstat(self.fd)
        return stat.S_ISFIFO(st.st_mode) and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def repair(self) -> bool:
        """Re-publish a FIFO that vanished (rings were missed meanwhile: the caller must catch up from its cursor).
        Returns whether anything had to be repaired."""
        if self.healthy():
            return False
        with self._lock:
            old = self.fd
            self._open()
            if old >= 0:
                os.close(old)
        return True

    def close(self) -> None:
        with self._lock:
            if self.fd < 0:
                return
            os.close(self.fd)
            self.fd = -1
            _silent_unlink(self.path)

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _silent_unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return  # a writer reaped it after we closed it: already gone, which is what we wanted
