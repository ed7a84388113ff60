"""Small durable-file helpers shared by backups, quarantine copies, the spool and the quick_check cache.

Never use these on the live database, -wal or -shm (closing any fd to them drops this process's SQLite locks):
they are for our own side files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_file(path: os.PathLike[str] | str) -> None:
    """fsync one of our own files (opened read-only, never through a symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any, *, durable: bool = True) -> None:
    """Write `data` as JSON to `path`: a temp file beside it (0600, created exclusively, never through a symlink),
    then rename over `path`, so a reader sees the old file or the new one, never half of one.

    `durable` fsyncs the content before the rename (callers fsync the directory when the name must survive a power
    cut too); a cache that is only an optimisation skips it. On failure the temp file is removed and the OSError
    propagates.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass  # already renamed into place, or never got that far
        raise
