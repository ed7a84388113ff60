"""The FIFO doorbell: writers ring after COMMIT; each reader owns one FIFO in `<board dir>/notify/`.

A ring is one byte written with O_WRONLY|O_NONBLOCK|O_NOFOLLOW. It never blocks and never fails a commit: ENXIO (no
reader has it open), EAGAIN (pipe full: the reader is already going to wake) and EPIPE are ignored. The doorbell
carries no data; readers keep a cursor on `events.id` and catch up, so a lost ring costs latency, never an event.

FIFO names are `<pid>.<name>.fifo`; a FIFO with no reader whose pid is gone is removed by the next writer.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

RING = b"\x01"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str) -> int | None:
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def ring(notify_dir: Path) -> int:
    """Ring every reader's doorbell. Returns how many readers were woken. Never raises."""
    woken = 0
    try:
        entries = list(os.scandir(notify_dir))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.endswith(".fifo"):
            continue
        try:
            if not stat.S_ISFIFO(entry.stat(follow_symlinks=False).st_mode):
                continue
            fd = os.open(entry.path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                _reap_if_dead(entry)
            continue
        try:
            os.write(fd, RING)
            woken += 1
        except OSError as exc:
            # EPIPE (reader just closed) or anything else: a doorbell must never fail the commit that rang it.
            if exc.errno == errno.EAGAIN:
                woken += 1  # the pipe is full of rings: the reader will wake anyway
        finally:
            os.close(fd)
    return woken


def _reap_if_dead(entry: os.DirEntry[str]) -> None:
    pid = _owner_pid(entry.name)
    if pid is not None and not _pid_alive(pid):
        try:
            os.unlink(entry.path)
        except OSError:
            return  # another writer reaped it first


class Doorbell:
    """A reader's end: one FIFO owned by this process, opened O_RDWR|O_NONBLOCK.

    Holding a write end ourselves means the FIFO never reports EOF/POLLHUP when writers come and go, so `wait` never
    busy-loops. Use as a context manager; `close()` removes the FIFO.
    """

    def __init__(self, notify_dir: Path, name: str) -> None:
        from .paths import ensure_private_dir

        ensure_private_dir(notify_dir)
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "reader"
        self.path = notify_dir / f"{os.getpid()}.{safe}.{os.urandom(3).hex()}.fifo"
        os.mkfifo(self.path, 0o600)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        if not stat.S_ISFIFO(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise OSError(f"{self.path} is not a FIFO")

    def fileno(self) -> int:
        return self.fd

    def wait(self, timeout: float | None) -> bool:
        """Block until rung or `timeout` seconds pass. Returns whether it was rung. Coalesces pending rings."""
        import select

        ready, _, _ = select.select([self.fd], [], [], timeout)
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

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                return

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
