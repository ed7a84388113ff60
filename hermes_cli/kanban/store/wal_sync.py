"""Syncing a connection's WAL ourselves, right after COMMIT and outside the write lock (group commit).

Under `synchronous=FULL` SQLite syncs the WAL inside COMMIT, while the board's one write lock is held: every writer
of the board waits for every other writer's fsync, so adding workers adds no throughput (B1: 8 workers did 0.44-0.51
of huey's rate). A board at FULL instead runs its connection at NORMAL (the commit writes its WAL frames and lets
the lock go) and `Database.write` then syncs the WAL through this module before it returns. What a caller is told
does not change: a write returns only once its commit is on disk. What changes: the next writer works while this
one waits for the disk, and fsyncs that overlap are merged by the filesystem's journal.

Why this is safe (docs/guarantees.md, "Group commit"):
- The WAL is appended in commit order and fsync covers the whole file, so a sync made after our COMMIT also covers
  every commit before ours. A power cut loses at most a suffix of commits that were never acknowledged; SQLite's
  WAL recovery (checksummed frames, NORMAL's syncs around checkpoints) keeps the board consistent, as under NORMAL.
- Another connection may see our commit up to one fsync before it is durable (as on a PostgreSQL board). Anything
  that hands board data to another system first calls `store.engine.wait_durable`, which syncs here too.

How: SQLITE_FCNTL_JOURNAL_POINTER (a documented file control) gives SQLite's own `sqlite3_file` for the WAL, and we
call its `xSync` (the documented sqlite3_io_methods interface) exactly as SQLite's commit would. So no second fd is
ever opened on the -wal (DESIGN: never open a board file from a process holding a connection), the sync goes
through whatever VFS the connection uses (the power-cut harness sees it), and it is the very call SQLite makes.
"""

from __future__ import annotations

import ctypes

import apsw

#: SQLITE_SYNC_NORMAL (sqlite3.h): what SQLite passes to the WAL's xSync at synchronous=FULL
SYNC_NORMAL = 0x00002

_XSYNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)


class _IoMethods(ctypes.Structure):
    """The leading members of `sqlite3_io_methods` (https://sqlite.org/c3ref/io_methods.html), up to xSync."""

    _fields_ = [
        ("iVersion", ctypes.c_int),
        ("xClose", ctypes.c_void_p),
        ("xRead", ctypes.c_void_p),
        ("xWrite", ctypes.c_void_p),
        ("xTruncate", ctypes.c_void_p),
        ("xSync", _XSYNC),
    ]


class _File(ctypes.Structure):
    """`sqlite3_file` (https://sqlite.org/c3ref/file.html): its one public member."""

    _fields_ = [("pMethods", ctypes.POINTER(_IoMethods))]


def _wal_file(conn: apsw.Connection) -> tuple[ctypes.c_void_p, _IoMethods] | None:
    """SQLite's open WAL file of `conn`'s main database and its methods, or None when it has none open."""
    ptr = ctypes.c_void_p()
    if not conn.file_control("main", apsw.SQLITE_FCNTL_JOURNAL_POINTER, ctypes.addressof(ptr)) or not ptr.value:
        return None
    methods = ctypes.cast(ptr, ctypes.POINTER(_File)).contents.pMethods
    if not methods:
        return None  # a closed file keeps its struct with pMethods NULL
    return ptr, methods.contents


def can_sync(conn: apsw.Connection) -> bool:
    """Whether `conn` has its WAL open, so `sync` can reach it (true of any WAL connection after its first read)."""
    return _wal_file(conn) is not None


def sync(conn: apsw.Connection) -> None:
    """fsync the WAL of `conn`'s database through SQLite's own file, as its COMMIT at FULL would. Raises
    apsw.IOError when the sync fails or the WAL is not open (the caller cannot claim durability then)."""
    found = _wal_file(conn)
    if found is None:
        raise apsw.IOError("the WAL is not open, so the commit could not be synced")
    ptr, methods = found
    rc = methods.xSync(ptr, SYNC_NORMAL)
    if rc != apsw.SQLITE_OK:
        raise apsw.IOError(f"syncing the WAL failed (SQLite result code {rc})")
