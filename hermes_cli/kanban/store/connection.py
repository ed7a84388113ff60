"""Opening a board database safely, and running transactions on it.

Rules from DESIGN.md (Storage) and reference/sqlite-reliability.md enforced here:
- APSW only (it bundles a current SQLite); refuse SQLite versions with the WAL-reset bug.
- WAL is set once, at creation, under synchronous=EXTRA; the directory is fsynced before the board goes live.
- Every read-modify-write runs in BEGIN IMMEDIATE with a bounded, jittered retry on BUSY.
- This module never open()s the db, -wal or -shm files: closing any fd to them would drop this process's POSIX locks.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import apsw

from ..core.errors import (
    BoardBusy,
    BoardReadOnly,
    Conflict,
    CorruptBoard,
    HermesError,
    InvalidValue,
    NotABoard,
    StorageError,
    WriteInterrupted,
)
from ..core.paths import BoardPaths, boards_root
from .environment import UNSAFE_FS, check_filesystem, check_sqlite_version, filesystem_type, sqlite_version, version_ok
from .write_queue import WriteQueue

#: reached as connection.X too (doctor, benches and tests name them here)
__all__ = ["UNSAFE_FS", "check_filesystem", "check_sqlite_version", "filesystem_type", "sqlite_version", "version_ok"]

T = TypeVar("T")

#: (st_dev, st_ino) of every board file this process holds an APSW connection to, with a count. A byte-level copy of
#: a file SQLite cannot read (store/health.py quarantine) is only allowed when this process holds none: closing the
#: copy's fd would drop every POSIX lock this process holds on that file (howtocorrupt.html section 2.2).
_OPEN_FILES: dict[tuple[int, int], int] = {}


def _file_id(path: os.PathLike[str] | str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # stat opens no fd, so it cannot drop locks
    except OSError:
        return None
    return st.st_dev, st.st_ino


def holds_connection(path: os.PathLike[str] | str) -> bool:
    """Whether this process holds an open board connection (Database) to the file at `path`."""
    fid = _file_id(path)
    return fid is not None and _OPEN_FILES.get(fid, 0) > 0


#: how long SQLite's own busy handler waits inside one attempt
BUSY_TIMEOUT_MS = 5_000
#: longest wait in the writers' flock queue before going to SQLite's lock without it (store/write_queue.py)
QUEUE_TIMEOUT_S = 1.0
#: attempts of a whole transaction on BUSY before giving up with BoardBusy
BUSY_ATTEMPTS = 8
SYNCHRONOUS_MODES = {"off": 0, "normal": 1, "full": 2, "extra": 3}
def synchronous_mode() -> str:
    mode = os.environ.get("HERMES_KANBAN_SYNCHRONOUS", "full").strip().lower()
    if mode not in SYNCHRONOUS_MODES or mode == "off":
        raise InvalidValue(f"HERMES_KANBAN_SYNCHRONOUS={mode!r} is not one of normal, full, extra")
    return mode


def fsync_dir(path: os.PathLike[str] | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def translate(exc: BaseException, db: os.PathLike[str] | str) -> HermesError:
    """Map an APSW exception to the domain error a user should see."""
    if isinstance(exc, HermesError):
        return exc
    if isinstance(exc, (apsw.NotADBError, apsw.CorruptError)):
        return CorruptBoard(
            f"board database {db} is corrupt or not a database ({exc}) (see: hermes kanban doctor)"
        )
    if isinstance(exc, apsw.ReadOnlyError):
        return BoardReadOnly(f"board database {db} is read-only ({exc}) (see: hermes kanban doctor)")
    if isinstance(exc, (apsw.BusyError, apsw.LockedError)):
        return BoardBusy(f"board database {db} stayed locked by other writers ({exc}); retry later")
    if isinstance(exc, apsw.FullError):
        return StorageError(f"disk full writing {db} ({exc}); free space and retry")
    if isinstance(exc, apsw.CantOpenError):
        return StorageError(f"cannot open board database {db} ({exc}) (check permissions on {os.path.dirname(db)})")
    return StorageError(f"board database {db}: {exc} (see: hermes kanban doctor)")


def unstorable(exc: UnicodeEncodeError | OverflowError, params: Any) -> InvalidValue:
    """A value SQLite cannot bind is bad input (exit 1), not a storage failure: text that is not valid UTF-8 (e.g.
    a non-UTF-8 byte in argv, which Python decodes to a lone surrogate) or an integer beyond 64 bits."""
    if isinstance(exc, UnicodeEncodeError):
        around = exc.object[max(0, exc.start - 20) : exc.end + 20]
        return InvalidValue(f"invalid text {around!r}: it is not valid UTF-8 (check the encoding of your input)")
    values = params.values() if isinstance(params, dict) else params
    big = next((v for v in values if isinstance(v, int) and not -(2**63) <= v < 2**63), None)
    what = "number" if big is None else f"number {big}"
    return InvalidValue(f"invalid {what}: integers must fit in 64 bits")


def open_lock_path(paths: BoardPaths) -> Path:
    """`.<db name>.open.lock` beside the db: every connection holds a shared flock on it for its whole life."""
    return paths.dir / f".{paths.db.name}.open.lock"


def hold_open_lock(paths: BoardPaths) -> int | None:
    """Take a shared flock on the board's open-lock file and return its fd (None if the directory is unwritable).

    `restore` and `boards rm` take the same lock exclusively (`exclusive_open_lock`), so they can never swap or
    move files under a live connection; a process scanning open files and then acting would leave a window in which
    a new opener pairs the old db with the new -wal. The lock lives in its own file: flock on the db itself would be
    a raw open of the db, whose close drops SQLite's POSIX locks.
    """
    try:
        fd = os.open(open_lock_path(paths), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return None  # read-only directory: the db cannot be swapped under us there either
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextmanager
def exclusive_open_lock(paths: BoardPaths) -> Iterator[None]:
    """Hold the board's open-lock exclusively: no connection (in any process, this one included) is open, and
    none can open until we let go. Raises Conflict (exit 3) naming the board when one is open."""
    fd = os.open(open_lock_path(paths), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                f"board {paths.db} is open in another process (a dispatcher, worker, TUI or CLI call); stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


#: the first 16 bytes of every SQLite database file
SQLITE_MAGIC = b"SQLite format 3\x00"
#: tables every hermes board has (schema v1)
BOARD_TABLES = frozenset({"schema_migrations", "tasks", "runs", "events"})


def known_board_dir(paths: BoardPaths) -> bool:
    """Whether hermes has kept this board here before: the directory is under the boards root, or a hermes
    connection has opened this db here (its open-lock file exists). Anywhere else (a HERMES_KANBAN_DB pointing into
    /etc, say) nothing may be written beside the file until it is known to be a board."""
    if boards_root().absolute() in paths.dir.absolute().parents:
        return True
    return os.path.lexists(open_lock_path(paths))


def not_a_board(paths: BoardPaths, why: str) -> NotABoard:
    return NotABoard(
        f"board database {paths.db} is not a hermes kanban board ({why}); nothing was written to it or beside it: "
        "point HERMES_KANBAN_DB at a board's kanban.db (see: hermes kanban boards list) or unset it"
    )


class Database:
    """One APSW connection to one board, with transaction helpers. Not shared between threads."""

    engine = "sqlite"

    def __init__(self, conn: apsw.Connection, paths: BoardPaths, open_lock: int | None = None, *,
                 refused: bool = False, group_commit: bool = False) -> None:
        self.conn = conn
        self.paths = paths
        #: the board is at synchronous=FULL, which its writers keep by group commit where they can
        self._full = group_commit and not refused
        #: this connection's writes sync the WAL after COMMIT, outside the write lock (store/wal_sync.py); None until
        #: its first write decides it (_start_group_commit)
        self.group_commit: bool | None = None if self._full else False
        #: a read-only look at a board that failed its check (doctor and repair read it; nothing can be written)
        self.refused = refused
        #: set once SQLite reported this board corrupt: closing then never checkpoints into it
        self._damaged = refused
        #: this connection created the board's database file (a new board)
        self.created = False
        #: run after every COMMIT of a write that inserted an event (Board.open installs the doorbell ring here:
        #: the store never imports the notification layer)
        self._event_hooks: list[Callable[[], object]] = []
        #: set when the current write transaction inserted an event: its COMMIT runs the event hooks
        self._wrote_event = False
        self._in_write = False
        #: fd of the shared open-lock taken before SQLite opened any file (connect); closed with the connection
        self._open_lock = open_lock
        self._file_id = _file_id(paths.db)
        #: the flock queue writers wait in (store/write_queue.py), made on the first write
        self._write_queue: WriteQueue | None = None
        if self._file_id is not None:
            _OPEN_FILES[self._file_id] = _OPEN_FILES.get(self._file_id, 0) + 1
        #: when set and true, waiting for the write lock stops at once (set_stop_check)
        self._stop: Callable[[], bool] | None = None

    def _translate(self, exc: BaseException) -> HermesError:
        err = translate(exc, self.paths.db)
        if isinstance(err, CorruptBoard):
            self._damaged = True
        return err

    # -- reads -------------------------------------------------------------------------------------------------------
    def rows(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        try:
            cur = self.conn.execute(sql, params)
            out: list[dict[str, Any]] = []
            names: list[str] | None = None
            for row in cur:
                if names is None:
                    names = [d[0] for d in cur.get_description()]
                out.append(dict(zip(names, row, strict=True)))
            return out
        except apsw.Error as exc:
            raise self._translate(exc) from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            raise unstorable(exc, params) from None

    def row(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def first(self, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
        """The first row as a tuple (no column names: for the hot paths that know their columns), or None.
        Runs the statement to its end, so an INSERT/UPDATE ... RETURNING is never left half-stepped."""
        try:
            found = self.conn.execute(sql, params).fetchall()
            return found[0] if found else None  # type: ignore[no-any-return]
        except apsw.Error as exc:
            raise translate(exc, self.paths.db) from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            raise unstorable(exc, params) from None

    def value(self, sql: str, params: Any = ()) -> Any:
        try:
            for row in self.conn.execute(sql, params):
                return row[0]
        except apsw.Error as exc:
            raise self._translate(exc) from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            raise unstorable(exc, params) from None
        return None

    def execute(self, sql: str, params: Any = ()) -> None:
        try:
            self.conn.execute(sql, params)
        except apsw.Error as exc:
            raise self._translate(exc) from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            raise unstorable(exc, params) from None

    def changes(self) -> int:
        """Rows changed by the last INSERT/UPDATE/DELETE."""
        return int(self.conn.changes())

    @property
    def in_transaction(self) -> bool:
        return bool(self.conn.in_transaction)

    def clock(self) -> float:
        """Seconds since the epoch by the clock leases are measured by: this host's, for a board on this host
        (a PostgreSQL board uses the server's, store/pg/database.py)."""
        return time.time()

    @contextmanager
    def read(self) -> Iterator[None]:
        """A consistent snapshot across several SELECTs (deferred transaction; never takes the write lock)."""
        if self._in_write:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def savepoint(self, name: str) -> None:
        """A savepoint inside the current write (`rollback_to` undoes what followed it; `release` keeps it)."""
        self.execute(f"SAVEPOINT {name}")

    def rollback_to(self, name: str) -> None:
        self.execute(f"ROLLBACK TO {name}")

    def release(self, name: str) -> None:
        self.execute(f"RELEASE {name}")

    # -- writes ------------------------------------------------------------------------------------------------------
    def set_stop_check(self, stop: Callable[[], bool] | None) -> None:
        """While `stop()` is true, a write that finds the board locked gives up at once with WriteInterrupted instead
        of waiting out its busy budget (a dispatcher told to stop now; DESIGN: a second signal stops it at once). The
        busy handler consults `stop` between its polls, so a stop that comes while waiting is seen within ~2 ms.
        None: back to the plain handler. A write that gets the lock is never interrupted."""
        self._stop = stop
        inner = fair_busy_handler(busy_timeout_ms())
        if stop is None:
            self.conn.setbusyhandler(inner)
            return

        def handler(prior_calls: int) -> bool:
            return not stop() and inner(prior_calls)

        self.conn.setbusyhandler(handler)

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop()

    def _interrupted(self) -> WriteInterrupted:
        return WriteInterrupted(f"board database {self.paths.db} is locked by another writer; not waiting for it "
                                "(stopping)")

    def on_event_commit(self, hook: Callable[[], object]) -> None:
        """Run `hook()` after the COMMIT of every write transaction that inserted an event: after COMMIT, never
        inside it, and never for a write that rolled back. `hook` must not raise (doorbell.ring never does)."""
        self._event_hooks.append(hook)

    def note_event(self) -> None:
        """The current write inserted an event (store.tasks.add_event calls this): its COMMIT runs the hooks."""
        self._wrote_event = True

    def write(self, fn: Callable[[], T], *, late_turn: bool = False) -> T:
        """Run `fn` inside BEGIN IMMEDIATE ... COMMIT, retrying the whole transaction on BUSY with jitter.

        `fn` must only touch the database (it may run more than once). Domain errors roll back and propagate
        unchanged, so bad input never changes the board. `late_turn` is for PostgreSQL boards
        (store/pg/database.py); here every write holds the board's one write lock from BEGIN anyway.
        """
        if self._in_write:
            return fn()
        if self.group_commit is None:
            self._start_group_commit()
        delay = 0.002
        queue = self._queue()
        for attempt in range(BUSY_ATTEMPTS):
            self._wrote_event = False
            retry = False
            try:
                queue.enter(self._stopping)  # wait our turn in the kernel, not by polling (store/write_queue.py)
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                except (apsw.BusyError, apsw.LockedError) as exc:
                    if self._stopping():
                        raise self._interrupted() from exc
                    if attempt == BUSY_ATTEMPTS - 1:
                        raise self._translate(exc) from exc
                    retry = True
                except apsw.Error as exc:
                    raise self._translate(exc) from exc
                if not retry:
                    self._in_write = True
                    try:
                        result = fn()
                        self.conn.execute("COMMIT")
                    except BaseException as exc:
                        self._rollback()
                        busy = isinstance(exc, (apsw.BusyError, apsw.LockedError))
                        if busy and self._stopping():
                            raise self._interrupted() from exc
                        if busy and attempt < BUSY_ATTEMPTS - 1:
                            retry = True
                        elif isinstance(exc, apsw.Error):
                            raise self._translate(exc) from exc
                        else:
                            raise
                    finally:
                        self._in_write = False
            finally:
                queue.leave()  # before the backoff sleep and the doorbell: the next writer goes now
            if retry:
                import random  # here: only a busy board needs jitter; hot commands start faster

                time.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 0.25)
                continue
            if self.group_commit:
                # The lock is free again: the next writer commits while we wait for the disk. Not acknowledged (and
                # no doorbell) until our commit, and every commit before it, is durable.
                self._sync_committed()
            if self._wrote_event:
                self._wrote_event = False
                for hook in self._event_hooks:
                    hook()  # after COMMIT, never inside it (Board.open installs the doorbell ring)
            return result
        raise BoardBusy(f"board database {self.paths.db} stayed locked by other writers; retry later")

    def _start_group_commit(self) -> None:
        """At the first write: FULL by group commit when SQLite's WAL file can be reached (store/wal_sync.py), else
        SQLite's own FULL. Decided here, not at open, so that commands that only read never import ctypes (~2 ms)."""
        from . import wal_sync

        try:
            self.conn.execute("PRAGMA schema_version").fetchall()  # a read opens the WAL, if not open yet
            self.group_commit = wal_sync.can_sync(self.conn)
            if self.group_commit:
                self.conn.execute(f"PRAGMA synchronous={SYNCHRONOUS_MODES['normal']}")
        except apsw.Error as exc:
            raise self._translate(exc) from exc

    def _sync_committed(self) -> None:
        from . import wal_sync

        try:
            wal_sync.sync(self.conn)
        except apsw.Error as exc:
            raise StorageError(
                f"board database {self.paths.db}: a write was committed but syncing it to disk failed ({exc}); it "
                "may be lost in a power cut (see: hermes kanban doctor)"
            ) from exc

    def wait_durable(self) -> None:
        """Return once every commit this connection can see is on disk (store.engine.wait_durable): with group
        commit another writer's commit is visible up to one fsync before it is durable. On a board at FULL this
        syncs whether or not this connection ever wrote: the commits it read are other writers'."""
        if self._full and not self._in_write:
            self._sync_committed()

    # A PostgreSQL board may run a write before its writers' turn (PgDatabase.write with late_turn); on SQLite every
    # write holds the lock from BEGIN, so these have nothing to do.
    def need_turn(self) -> None:
        """Inside a late-turn write: this write needs the turn from its start (PgDatabase). Nothing here."""

    def check_at_turn(self, sql: str, params: Any = ()) -> None:
        """Inside a late-turn write: `sql` must find no row once the turn is taken (PgDatabase). Nothing here."""

    def _queue(self) -> WriteQueue:
        """The board's writer queue, made on the first write (a connection that only reads never touches it)."""
        if self._write_queue is None:
            # At most 1 s in the queue: a normal wait is a few transactions long, and a queue holder that stopped
            # (SIGSTOP) should cost the others no more than that before they go to SQLite's lock directly.
            self._write_queue = WriteQueue(self.paths.db, min(busy_timeout_ms() / 1000, QUEUE_TIMEOUT_S))
        return self._write_queue

    def _rollback(self) -> None:
        if not self.conn.in_transaction:
            return
        try:
            self.conn.execute("ROLLBACK")
        except apsw.Error:
            # A failed ROLLBACK means SQLite already rolled back (e.g. after an I/O error); nothing is left open.
            pass

    def close(self) -> None:
        if self._damaged:
            # Closing the last connection checkpoints the -wal into the db and deletes both: never into a board
            # SQLite found damaged (DESIGN.md Storage: a refused board is left byte-identical).
            self.conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        self.conn.close()
        if self._write_queue is not None:
            self._write_queue.close()
            self._write_queue = None
        if self._open_lock is not None:
            os.close(self._open_lock)  # a separate lock file: closing it cannot touch SQLite's locks
            self._open_lock = None
        if self._file_id is not None and _OPEN_FILES.get(self._file_id, 0) > 0:
            _OPEN_FILES[self._file_id] -= 1
            if not _OPEN_FILES[self._file_id]:
                del _OPEN_FILES[self._file_id]
            self._file_id = None


def busy_timeout_ms() -> int:
    """SQLite's busy wait per attempt: BUSY_TIMEOUT_MS, or HERMES_KANBAN_BUSY_TIMEOUT_MS (1..600000). A write gives up
    with BoardBusy after about BUSY_ATTEMPTS times this; workers that would rather spool a report sooner lower it."""
    raw = os.environ.get("HERMES_KANBAN_BUSY_TIMEOUT_MS")
    if not raw:
        return BUSY_TIMEOUT_MS
    try:
        ms = int(raw)
    except ValueError:
        ms = -1
    if not 1 <= ms <= 600_000:
        raise InvalidValue(f"HERMES_KANBAN_BUSY_TIMEOUT_MS={raw!r} is not a number of milliseconds in 1..600000")
    return ms


def fair_busy_handler(timeout_ms: int) -> Callable[[int], bool]:
    """A busy handler that polls the write lock every 0.2-2 ms until `timeout_ms` has passed.

    SQLite's built-in busy_timeout sleeps 1, 2, 5, 10 ... 100 ms between tries, so a waiter backs off while a busy
    writer (which re-takes the lock right after its own commit) keeps winning: with two workers burning through a
    board, a `create` from a third process waited 0.8 s at the median and 2.1 s at worst. Short jittered polls keep
    every waiter in the race (same experiment: 8 ms median, 54 ms worst). bench/compare's B3 measures it.
    """
    timeout_s = timeout_ms / 1000
    started = [0.0]

    def handler(prior_calls: int) -> bool:
        now = time.monotonic()
        if prior_calls == 0:
            started[0] = now
        elif now - started[0] >= timeout_s:
            return False
        import random  # here, not at the top: see the retry above (cached after the first call)

        time.sleep(random.uniform(0.0002, 0.002))
        return True

    return handler


def configure(conn: apsw.Connection, synchronous: str) -> bool:
    """Set up a read-write connection to a WAL board. Returns whether its writes should use group commit (at `full`:
    Database.write then runs it at NORMAL and syncs the WAL itself after COMMIT, outside the write lock)."""
    conn.setbusyhandler(fair_busy_handler(busy_timeout_ms()))
    # One statement per execute: APSW stops a multi-statement string at the first one that returns a row (mmap_size
    # does), which once left journal_size_limit unset.
    for pragma in (f"synchronous={SYNCHRONOUS_MODES[synchronous]}", "foreign_keys=ON", "mmap_size=0",
                   "journal_size_limit=67108864"):
        conn.execute(f"PRAGMA {pragma}").fetchall()
    return synchronous == "full"
