"""Whole-file locks on our own side files (`.init.lock`, `.restore.lock`): flock(2), the one locking mechanism of
hermes besides SQLite's own (the open-lock and the writer queue in store/ are flock too; restore's try-lock of
SQLite's lock bytes is fcntl byte-range locking because that is what SQLite uses). docs/architecture.md says why."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: how often a waiting `file_lock` tries again (a signal is handled between tries, in Python)
POLL_S = 0.05


class LockHeld(Exception):
    """`file_lock(..., wait=False)` found the lock held by another open file (another process, or another lock
    object in this one)."""


@contextmanager
def file_lock(path: os.PathLike[str] | str, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created 0600, never through a symlink) for the block.

    Waits by polling (as filelock did): a SIGINT or SIGTERM while waiting is handled in Python between polls, which
    the dispatcher's start-up relies on. `wait=False` raises LockHeld at once instead. The file is left in place
    (deleting it would let a waiter lock an unlinked inode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if not wait:
                    raise LockHeld(str(Path(path))) from None
                time.sleep(POLL_S)
        yield
    finally:
        os.close(fd)  # closing the only fd of this open file description releases the flock
