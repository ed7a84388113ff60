"""Opening a board: the composition of the connection (store/connection.py) and the open-time checks
(store/health.py): refuse what is not a board, probe a file not known good through a connection that cannot write,
fail closed on damage, create a new board with WAL switched on. Above both so neither imports the other."""

from __future__ import annotations

import os

import apsw

from ..core.errors import HermesError, StorageError
from ..core.locks import file_lock
from ..core.paths import BoardPaths, check_db_path, ensure_private_dir
from . import connection
from . import health as store_health
from .connection import (
    BOARD_TABLES,
    SQLITE_MAGIC,
    Database,
    busy_timeout_ms,
    check_filesystem,
    check_sqlite_version,
    configure,
    fair_busy_handler,
    hold_open_lock,
    holds_connection,
    known_board_dir,
    not_a_board,
    synchronous_mode,
    translate,
)


def check_is_board(paths: BoardPaths, vfs: str | None = None) -> None:
    """Refuse (NotABoard, exit 4) an existing file outside a known board directory that is not a hermes board: not an
    SQLite file, or an SQLite database without the board's tables. Looks without writing anything: the header with
    one read, the tables through `store_health.probe` (read-only, creates no -wal or -shm)."""
    if known_board_dir(paths) or holds_connection(paths.db):
        return
    try:
        # No connection to this file is held in this process (checked above), so closing this fd drops no lock.
        fd = os.open(paths.db, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            head = os.read(fd, 100)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot read {paths.db} ({exc.strerror or exc}) (check HERMES_KANBAN_DB)") from None
    if not head:
        raise not_a_board(paths, "an empty file")
    if not head.startswith(SQLITE_MAGIC) or len(head) < 100:
        raise not_a_board(paths, "not an SQLite database")
    look = store_health.probe(paths, check=False, vfs=vfs)
    if look is None:
        return  # it cannot be read without writing (busy, a -wal without its -shm): the usual open decides
    try:
        if look.error is not None:
            raise not_a_board(paths, f"an SQLite file whose header cannot be read: {look.error}")
        tables = {str(r[0]) for r in look.conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        version = store_health.int_value(look.conn, "PRAGMA user_version")
    except apsw.Error as exc:
        raise not_a_board(paths, f"an SQLite database that cannot be read: {exc}") from None
    finally:
        look.conn.close()
    if version < 1 or not BOARD_TABLES <= tables:
        raise not_a_board(paths, "an SQLite database without the board's tables")


def connect(
    paths: BoardPaths, *, create: bool, verify: bool = True, vfs: str | None = None, probe: bool = True
) -> Database:
    """Open (and if asked, create) a board database. Never creates anything over an existing file.

    Fail-closed (store/health.py): an empty, not-a-database or check-failing file raises CorruptBoard (exit 4) naming
    the file and the next command, after one content-addressed quarantine copy; the db, -wal and -shm are left
    byte-identical. The check runs (when the file state is not already known good) through a connection that cannot
    write any board file (`store_health.probe`) before any read-write connection exists. `verify=False` (doctor and
    repair open damaged boards on purpose) returns that read-only connection for a board that fails the check
    (`Database.refused`); the header is always read. `probe=False` opens read-write straight away (repair, once it
    has decided to write). `vfs` names a registered SQLite VFS (the power-cut simulation in tests/torture); None is
    SQLite's default.
    """
    check_sqlite_version()
    synchronous_mode()  # refuse bad settings from the environment before anything is created
    busy_timeout_ms()
    if create:
        ensure_private_dir(paths.dir)
    else:
        check_db_path(paths.db, must_exist=True)
    check_filesystem(paths.dir)
    if check_db_path(paths.db, must_exist=False):
        check_is_board(paths, vfs)  # before the open-lock file or anything else is created beside it
    # The open-lock is taken before SQLite opens any file: while `restore` or `boards rm` hold it exclusively this
    # waits with nothing open, then opens whatever file is in place by then (never the old db with the new -wal).
    lock = hold_open_lock(paths)
    try:
        if check_db_path(paths.db, must_exist=not create):
            return _open(paths, lock, verify=verify, vfs=vfs, probe=probe)
        return _create(paths, lock, vfs=vfs)
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise


def _open(paths: BoardPaths, lock: int | None, *, verify: bool, vfs: str | None, probe: bool = True) -> Database:
    store_health.check_not_empty(paths)
    key = store_health.db_key(paths.db)
    # Skipped when this process already holds a connection to the file (it was checked when that one opened, and a
    # closed read-only connection's fd would linger in SQLite's pending-close list for as long as that one lives).
    if probe and not holds_connection(paths.db) and not (key is not None and store_health.cached_ok(paths, key)):
        look = store_health.probe(paths, vfs=vfs)
        if look is not None and look.problems:
            if look.error is not None:  # the header is unreadable: refused even to doctor (as before the probe)
                raise store_health.fail_closed(paths, look.error, look.conn)
            if verify:
                raise store_health.fail_closed(paths, store_health.CheckFailed(look.problems), look.conn)
            return Database(look.conn, paths, lock, refused=True)
        if look is not None:
            look.conn.close()  # passed (and remembered): the read-write open below trusts that check
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_NOFOLLOW
    conn: apsw.Connection | None = None
    try:
        conn = apsw.Connection(str(paths.db), flags=flags, vfs=vfs)
        group = configure(conn, synchronous_mode())
        # Reading the header page proves the file is a database before we trust anything else in it.
        conn.execute("PRAGMA schema_version").fetchall()
        if verify:
            store_health.verify_on_open(conn, paths)
    except HermesError:
        if conn is not None:
            conn.close()
        raise
    except apsw.Error as exc:
        if isinstance(exc, (apsw.NotADBError, apsw.CorruptError)):
            raise store_health.fail_closed(paths, exc, conn) from exc
        if conn is not None:
            conn.close()
        raise translate(exc, paths.db) from exc
    return Database(conn, paths, lock, group_commit=group)


def _create(paths: BoardPaths, lock: int | None, vfs: str | None = None) -> Database:
    """Create a new board: WAL switched on under synchronous=EXTRA, then the directory fsynced.

    Two processes creating one board at once is harmless: the loser finds the file and opens it instead. WAL is
    only switched on when the file is still empty, so an existing database is never re-initialised.
    """
    with file_lock(paths.dir / ".init.lock"):
        if check_db_path(paths.db, must_exist=False):
            return _open(paths, lock, verify=True, vfs=vfs)
        old_umask = os.umask(0o077)  # SQLite creates the db (and later -wal/-shm) 0600 from this
        conn: apsw.Connection | None = None
        try:
            flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_NOFOLLOW
            conn = apsw.Connection(str(paths.db), flags=flags, vfs=vfs)
            conn.setbusyhandler(fair_busy_handler(connection.BUSY_TIMEOUT_MS))
            conn.execute("PRAGMA synchronous=EXTRA")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            if mode != "wal":
                raise StorageError(f"could not switch {paths.db} to WAL (got {mode}); is the filesystem local?")
            connection.fsync_dir(paths.dir)  # through the module: tests/torture observes it
            db = Database(conn, paths, lock, group_commit=configure(conn, synchronous_mode()))
            db.created = True
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, apsw.Error):
                raise translate(exc, paths.db) from exc
            raise
        finally:
            os.umask(old_umask)
        return db
