"""One psycopg connection to one PostgreSQL board: the same interface as store.connection.Database, so the store's
SQL and the whole domain run unchanged on either engine.

What differs, and why:
- Writers of one board take turns, as on SQLite: an advisory lock on the board (the writers' turn) is the first
  statement of every write transaction and is let go by its COMMIT. The domain's read-check-write transactions were
  written for serialized writers. The first version let writers overlap under SERIALIZABLE and took the lock only at
  the first event insert: concurrent claims aborted each other (1-7 serialization failures per task at 4-16
  workers) and, worse, a claim holding a task row and a completion holding the event lock deadlocked (24 deadlocks,
  each a 1 s stall, and 9 tasks in 17 s at 16 `complete --next` workers; 0 deadlocks with the turn:
  docs/performance.md). Since every write holds the turn, writes run one at a time and READ COMMITTED is enough:
  each statement's snapshot is taken after the lock was granted, so it sees every earlier writer's commit (under
  SERIALIZABLE or REPEATABLE READ the snapshot would date from the lock statement itself, before the previous writer
  committed). A retry on a serialization failure or deadlock is kept for writes that can still meet one (DDL).
- The turn is held for as few round trips as possible, because while one writer waits for the network or for a
  CPU, every other writer of the board waits for it: BEGIN, the lock, the clock are one round trip; the event
  INSERTs (nothing in a write reads its own events back, and no statement but a read of `events` could notice) are
  held back and sent with NOTIFY and COMMIT in the last one.
- For the same reason an UPDATE whose result nobody reads (a run closed, a lease extended) is not sent on its own:
  it is bound client-side and sent ahead of the write's next statement, in that statement's round trip (the
  fenced completion's run close travels with the COMMIT). `changes()` sends what is held first; an error in a held
  UPDATE is raised by the statement it travelled with, inside the same transaction, which then rolls back whole.
- A late turn (`write(fn, late_turn=True)`): a worker's fenced completion takes the turn only in its last round
  trip, just before its event INSERTs and COMMIT, so the turn is held for no client round trip at all (measured: a
  completion held it ~2.5 ms of the ~5 ms a task cost at 4-16 workers, `bench/pg_compare.py`). What keeps it
  correct: every row it decides on is locked by its own UPDATE from that UPDATE to COMMIT (the fenced UPDATE of the
  task), so a writer in the turn either committed before (and the UPDATE saw it) or waits for ours; its event ids
  are still handed out inside the turn, in commit order; whatever else it relied on is checked again once the turn
  is ours (`check_at_turn`: e.g. "the task still has no children", which a writer in the turn may have linked
  before we got it), and a failed check runs the write again with the turn first (`need_turn`, likewise whenever
  the write finds it needs more than the fast path). A writer in the turn that wants the locked row (a reclaim of
  that very task) and the late writer waiting for the turn deadlock: PostgreSQL's detector (deadlock_timeout, 1 s
  by default) aborts one, which runs again. That costs a second, only when an expired lease is reclaimed at the
  instant its worker completes.
- Time comes from the database (`clock_timestamp()` read at BEGIN), never the host: hosts' clocks may disagree, the
  server's is the one every lease is measured by. A late-turn write reads it before its turn, so its times
  (a completion's completed_at, its event's created_at) may be older than those of a write that committed just
  before it, by the wait for the turn; no lease is measured from them (a completion ends its lease).
- Event ids must be handed out in commit order (readers follow `id > cursor`): the writers' turn is held from the
  start of the transaction to its COMMIT, so no later id commits before an earlier one.
- The turn is not held through the WAL flush. Held through a synchronous COMMIT, it made every commit of a board wait
  for its own fsync in turn (~3.5 ms each on the project's VM), so a board did at most ~290 commits/s whatever the
  number of workers, and concurrent commits never shared a flush. So a write COMMITs inside the turn with
  `synchronous_commit = off` (visible at once, in order), lets the turn go, and only then waits for its commit to be
  durable: a one-record synchronous transaction of its own (`pg_logical_emit_message`, transactional: it takes an
  xid and writes WAL, so its COMMIT flushes the WAL up to and including ours; no table, any role may call it),
  sent after our COMMIT in the same batch, so the wait costs no round trip of its own. Writers waiting for their
  flushes at the same time share one fsync (PostgreSQL's group commit). The caller hears of success only after
  the flush: what it was told is durable, is. A write another session saw before the flush
  cannot outlive a crash that loses ours: WAL is replayed in order, so whatever that session then wrote comes after
  ours in the WAL and is lost with it. A connection lost between COMMIT and the flush is BoardUnreachable, like a
  COMMIT whose answer was lost: the outcome is unknown to the caller, and worker reports spool and are reconciled.
- A cut-off client must not keep the turn: each session sets short TCP keepalives and `tcp_user_timeout`, so the
  server ends the session (releasing the turn) within seconds; `idle_in_transaction_session_timeout` is the
  database's to set (docs/fleet.md).
- A write that inserted an event sends NOTIFY before COMMIT: PostgreSQL delivers it only if and when the transaction
  commits, so listeners are woken after commit (live/ listens on the channel).
- A lost connection is BoardUnreachable (a StorageError, so worker reports spool); the next call reconnects.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import ExecStatus

from ...core.errors import (
    BoardBusy,
    BoardUnreachable,
    HermesError,
    InvalidValue,
    StorageError,
    WriteInterrupted,
)
from ...core.paths import BoardPaths
from ..engine import redact_url
from .dialect import to_postgres

T = TypeVar("T")

TUPLES_OK = ExecStatus.TUPLES_OK

#: attempts of a whole write transaction on serialization failure / deadlock before BoardBusy
WRITE_ATTEMPTS = 30
#: seconds to wait for a connection (HERMES_KANBAN_PG_CONNECT_TIMEOUT)
CONNECT_TIMEOUT_S = 5


#: PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1)
MAX_IDENTIFIER = 63


def _identifier(prefix: str, slug: str) -> str:
    """`prefix + slug`, one name per slug: a slug with `-` (never in a plain name) or too long to fit is shortened and
    given a hash of the whole slug, so `a-b` and `a_b`, or two long slugs with one prefix, never share a name."""
    if "-" not in slug and len(prefix) + len(slug) <= MAX_IDENTIFIER:
        return prefix + slug
    import hashlib

    digest = hashlib.sha256(slug.encode()).hexdigest()[:16]
    keep = MAX_IDENTIFIER - len(prefix) - len(digest) - 1
    return f"{prefix}{slug.replace('-', '_')[:keep]}_{digest}"


def schema_name(slug: str) -> str:
    """The PostgreSQL schema a board lives in: one database can hold many boards (and the hub)."""
    return _identifier("hk_", slug)


def channel_name(slug: str) -> str:
    """The board's NOTIFY channel (quote it in LISTEN: it is an identifier)."""
    return _identifier("hk_events_", slug)


def application_name(slug: str | None) -> str:
    """What pg_stat_activity shows for our connections: `boards rm --drop-schema` refuses while a board has any."""
    return "hermes-kanban" if slug is None else f"hermes-kanban/{slug}"


#: how long a just-closed connection may still be listed by pg_stat_activity (its backend exits after the client
#: hung up, not at once) before it counts as open
CLOSING_GRACE_S = 2.0


def other_board_connections(conn: psycopg.Connection[Any], slug: str) -> list[tuple[Any, ...]]:
    """(pid, client address) of every other hermes connection to board `slug` in this database. A connection whose
    client just closed it is still listed until its backend has exited: it is waited for (CLOSING_GRACE_S), so a
    command that closed its board and then dropped or moved it is not refused by its own past."""
    query = ("SELECT pid, coalesce(client_addr::text, 'local') FROM pg_stat_activity WHERE application_name = %s "
             "AND pid <> pg_backend_pid() AND datname = current_database()")
    deadline = time.monotonic() + CLOSING_GRACE_S
    while True:
        found = conn.execute(query, (application_name(slug),)).fetchall()
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)
        conn.execute("SELECT pg_stat_clear_snapshot()")  # inside a transaction the view is a snapshot: renew it


def connect_timeout() -> int:
    raw = os.environ.get("HERMES_KANBAN_PG_CONNECT_TIMEOUT", "")
    try:
        value = int(raw) if raw else CONNECT_TIMEOUT_S
    except ValueError:
        value = -1
    if not 1 <= value <= 600:
        raise InvalidValue(f"HERMES_KANBAN_PG_CONNECT_TIMEOUT={raw!r} is not a number of seconds in 1..600")
    return value


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return redact_url(url)


def open_connection(url: str, *, autocommit: bool = True, slug: str | None = None) -> psycopg.Connection[Any]:
    """A connection with keepalives short enough that a partition is noticed in seconds, not hours."""
    try:
        return psycopg.connect(
            url, autocommit=autocommit, connect_timeout=connect_timeout(), keepalives=1, keepalives_idle=5,
            keepalives_interval=2, keepalives_count=3, tcp_user_timeout=15_000, application_name=application_name(slug),
        )
    except psycopg.OperationalError as exc:
        raise BoardUnreachable(f"PostgreSQL at {redact(url)} cannot be reached ({one_line(exc)}); reports spool "
                               "locally until it is back (see: hermes kanban doctor)") from None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


#: how the store writes an event (store/tasks.py add_event): such INSERTs are held back to the commit (see write)
_EVENT_INSERT = "INSERT INTO events("

_RETRY = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.LockNotAvailable)

#: the SQLSTATE a late-turn write's check raises once the turn is taken (see check_at_turn): a class of our own
CHANGED_BEFORE_TURN = "HK001"


#: a one-record transactional WAL write whose synchronous COMMIT flushes the WAL through every earlier commit of
#: this session (wait_durable; the module docstring)
_DURABLE = b"SELECT pg_logical_emit_message(true, 'hermes-kanban', '')"


class TurnNeeded(Exception):
    """Raised inside a late-turn write that needs the writers' turn from its start: it runs again, turn first."""


class PgDatabase:
    """One connection to one PostgreSQL board, with the interface of store.connection.Database."""

    engine = "postgres"

    def __init__(self, url: str, paths: BoardPaths, *, schema: str | None = None) -> None:
        self.url = url
        self.paths = paths
        self.schema = schema or schema_name(paths.slug)
        self.channel = channel_name(paths.slug)
        self.refused = False
        self.created = False
        self._event_hooks: list[Callable[[], object]] = []
        self._held_events: list[bytes] = []
        self._held_writes: list[bytes] = []
        self._late = False
        self._turn_checks: list[bytes] = []
        self._savepoints: dict[str, int] = {}
        self._wrote_event = False
        self._in_write = False
        self._in_read = False
        self._tx_now: float | None = None
        self._rowcount = 0
        self._stop: Callable[[], bool] | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._binder: psycopg.ClientCursor[Any] | None = None
        self._connect()

    # -- the connection ---------------------------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        conn = open_connection(self.url, slug=self.paths.slug)
        try:
            conn.execute(f'SET search_path TO "{self.schema}"')
            # A writer holds the board's turn (below) from before BEGIN to after COMMIT: if its host is cut off or
            # the process stopped, the server must notice and end the session (releasing the turn) in seconds, not
            # after the kernel's two hours. All four are settable by any role, per session.
            # (idle_in_transaction_session_timeout is the database's to set: docs/fleet.md recommends 5 s.)
            # tcp_user_timeout too: a backend whose reply to a cut-off client is never acknowledged (so no keepalive
            # is sent) would otherwise hold the turn for the kernel's ~15 minutes of retransmissions.
            conn.execute("SET tcp_keepalives_idle = 2; SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 3; "
                         "SET tcp_user_timeout = 5000")
            if conn.info.server_version >= 140000:
                conn.execute("SET client_connection_check_interval = '2s'")
        except psycopg.Error as exc:
            conn.close()
            raise self._translate(exc) from exc
        self._conn = conn
        return conn

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._in_write or self._in_read:
                raise BoardUnreachable(f"lost the connection to {self.where} inside a transaction")
            return self._connect()
        return self._conn

    @property
    def where(self) -> str:
        return f"PostgreSQL board {self.paths.slug} at {redact(self.url)}"

    @property
    def in_transaction(self) -> bool:
        return self._in_write or self._in_read

    def _translate(self, exc: BaseException) -> HermesError:
        if isinstance(exc, HermesError):
            return exc
        if isinstance(exc, psycopg.OperationalError) and (self._conn is None or self._conn.broken or
                                                         isinstance(exc, pg_errors.AdminShutdown)):
            return BoardUnreachable(f"{self.where} cannot be reached ({one_line(exc)}); reports spool locally until "
                                    "it is back (see: hermes kanban doctor)")
        if isinstance(exc, _RETRY):
            return BoardBusy(f"{self.where}: writers kept colliding ({one_line(exc)}); retry later")
        if isinstance(exc, (pg_errors.InsufficientPrivilege, pg_errors.InvalidAuthorizationSpecification)):
            return StorageError(f"{self.where}: permission denied ({one_line(exc)}); check the role in the URL")
        if isinstance(exc, pg_errors.InvalidSchemaName | pg_errors.UndefinedTable):
            return StorageError(f"{self.where} has no board schema {self.schema} ({one_line(exc)}) "
                                f"(see: hermes kanban boards create {self.paths.slug} --url ...)")
        if isinstance(exc, pg_errors.NumericValueOutOfRange):
            return InvalidValue(f"invalid number: integers must fit in 64 bits ({one_line(exc)})")
        if isinstance(exc, pg_errors.CharacterNotInRepertoire | pg_errors.UntranslatableCharacter):
            return InvalidValue(f"invalid text: it is not valid UTF-8 ({one_line(exc)})")
        if isinstance(exc, psycopg.OperationalError):
            return BoardUnreachable(f"{self.where}: {one_line(exc)} (see: hermes kanban doctor)")
        return StorageError(f"{self.where}: {one_line(exc)} (see: hermes kanban doctor)")

    @staticmethod
    def _params(params: Any) -> Any:
        # SQLite stores booleans as 0/1 and so do our PostgreSQL tables (one schema for both engines' rows).
        values = list(params.values()) if isinstance(params, dict) else list(params)
        for v in values:
            # psycopg would send a big Python int as numeric and PostgreSQL would compare it happily; SQLite cannot
            # bind it: refuse it the same way on both engines (bad input, exit 1).
            if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
                raise InvalidValue(f"invalid number {v}: integers must fit in 64 bits")
        if isinstance(params, dict):
            return {k: int(v) if isinstance(v, bool) else v for k, v in params.items()}
        return [int(v) if isinstance(v, bool) else v for v in params]

    def _cursor(self, sql: str | bytes, params: Any, *, last: bool = True) -> psycopg.Cursor[Any]:
        """Run `sql` (a str in the store's dialect; bytes: PostgreSQL SQL with every value already bound, sent as it
        is) and return its cursor, errors translated. A batch's cursor shows its last statement's result unless
        `last` is False (nobody reads it)."""
        if self._held_events and isinstance(sql, str) and "events" in sql:
            self._send_held_events()
        if self._held_writes:
            # the held UPDATEs go first, in this statement's round trip (its result is the batch's last)
            held, self._held_writes = self._held_writes, []
            sql, params = b"; ".join([*held, sql if isinstance(sql, bytes) else self._bound(sql, params)]), ()
        try:
            if isinstance(sql, bytes):
                cur = self.conn.execute(sql)
                while last and cur.nextset():
                    pass
            elif params:
                cur = self.conn.execute(to_postgres(sql), self._params(params))
            else:
                cur = self.conn.execute(to_postgres(sql, with_params=False).encode())
            self._rowcount = cur.rowcount
            return cur
        except UnicodeEncodeError as exc:
            around = exc.object[max(0, exc.start - 20): exc.end + 20]
            raise InvalidValue(f"invalid text {around!r}: it is not valid UTF-8 (check the encoding of your input)"
                               ) from None
        except (OverflowError, psycopg.DataError) as exc:
            if isinstance(exc, OverflowError) or isinstance(exc, pg_errors.NumericValueOutOfRange):
                raise InvalidValue(f"invalid number: integers must fit in 64 bits ({one_line(exc)})") from None
            if "NUL (0x00)" in str(exc):  # psycopg refuses it before sending: bad input, as on SQLite's checks
                raise InvalidValue("invalid text: a PostgreSQL board cannot store NUL (0x00) characters") from None
            raise self._translate(exc) from exc
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    # -- reads -------------------------------------------------------------------------------------------------------
    # Cursor.pgresult (public) says whether a statement returned rows and names its columns; Cursor.description
    # would build a Column object per column first (a completion RETURNs all 26 of the task's: ~15 % of a worker's
    # CPU per task, by a process-time profile).
    def rows(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        cur = self._cursor(sql, params)
        res = cur.pgresult
        if res is None or res.status != TUPLES_OK:
            return []
        names = [(res.fname(i) or b"").decode() for i in range(res.nfields)]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def row(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def first(self, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
        cur = self._cursor(sql, params)
        res = cur.pgresult
        if res is None or res.status != TUPLES_OK:
            return None
        found = cur.fetchone()
        return None if found is None else tuple(found)

    def value(self, sql: str, params: Any = ()) -> Any:
        found = self.first(sql, params)
        return None if found is None else found[0]

    def execute(self, sql: str, params: Any = ()) -> None:
        if self._in_write and sql.startswith(_EVENT_INSERT):
            self._held_events.append(self._bound(sql, params))
            self._rowcount = 1
            return
        if self._in_write and sql.startswith("UPDATE "):
            self._held_writes.append(self._bound(sql, params))  # sent with the next statement (module docstring)
            return
        self._cursor(sql, params)

    def _bound(self, sql: str, params: Any) -> bytes:
        """`sql` with `params` bound here (client side), as PostgreSQL SQL text to be sent later in a batch (see the
        module docstring). Bad values are refused now, as a sent statement would refuse them."""
        try:
            if not params:
                return to_postgres(sql, with_params=False).encode()
            if self._binder is None or self._binder.connection is not self.conn:
                self._binder = psycopg.ClientCursor(self.conn)  # one per connection: making one costs more than binding
            text = self._binder.mogrify(to_postgres(sql), self._params(params))
        except UnicodeEncodeError as exc:
            around = exc.object[max(0, exc.start - 20): exc.end + 20]
            raise InvalidValue(f"invalid text {around!r}: it is not valid UTF-8 (check the encoding of your input)"
                               ) from None
        except psycopg.DataError as exc:
            if "NUL (0x00)" in str(exc):
                raise InvalidValue("invalid text: a PostgreSQL board cannot store NUL (0x00) characters") from None
            raise self._translate(exc) from exc
        return text.encode()

    def _send_held_events(self) -> None:
        held, self._held_events = self._held_events, []
        # every open savepoint now precedes all that is still to be held back
        self._savepoints = dict.fromkeys(self._savepoints, 0)
        self._cursor(b"; ".join(held), ())

    def changes(self) -> int:
        """Rows changed by the last statement (sqlite3_changes on the other engine)."""
        if self._held_writes:
            held, self._held_writes = self._held_writes, []
            self._cursor(b"; ".join(held), ())  # the last held UPDATE is the last statement: its count is kept
        return self._rowcount

    def clock(self) -> float:
        """Seconds since the epoch by the database server's clock (inside a write: as of its BEGIN)."""
        if self._tx_now is not None:
            return self._tx_now
        return float(self.value("SELECT extract(epoch FROM clock_timestamp())::float8"))

    @contextmanager
    def read(self) -> Iterator[None]:
        """A consistent snapshot across several SELECTs."""
        if self._in_write or self._in_read:
            yield
            return
        self._cursor("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", ())
        self._in_read = True
        try:
            yield
        finally:
            self._in_read = False
            self._end("COMMIT")

    def _end(self, statement: str) -> None:
        if self._conn is None or self._conn.closed or self._conn.broken:
            return
        try:
            self._conn.execute(statement)
        except psycopg.Error:
            # A failed COMMIT/ROLLBACK of a read, or a ROLLBACK on a connection that just failed: nothing is left
            # open on the server (the transaction ended with the error or the connection).
            pass

    # Held-back event INSERTs (see write) belong to the savepoint they were written after: a rollback to it drops
    # them as PostgreSQL would have dropped the rows.
    def savepoint(self, name: str) -> None:
        self.execute(f"SAVEPOINT {name}")
        self._savepoints[name] = len(self._held_events)

    def rollback_to(self, name: str) -> None:
        self.execute(f"ROLLBACK TO SAVEPOINT {name}")
        del self._held_events[self._savepoints.get(name, 0):]

    def release(self, name: str) -> None:
        self.execute(f"RELEASE SAVEPOINT {name}")
        self._savepoints.pop(name, None)

    # -- writes ------------------------------------------------------------------------------------------------------
    def set_stop_check(self, stop: Callable[[], bool] | None) -> None:
        self._stop = stop

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop()

    def on_event_commit(self, hook: Callable[[], object]) -> None:
        self._event_hooks.append(hook)

    def note_event(self) -> None:
        """The current write is about to insert an event: remember to NOTIFY. Its id commits in order because the
        write holds the board's writers' turn from before BEGIN to after COMMIT (see write)."""
        self._wrote_event = True

    def need_turn(self) -> None:
        """Inside a late-turn write: this write needs the turn from its start (it runs again, turn first)."""
        if self._late:
            raise TurnNeeded

    def check_at_turn(self, sql: str, params: Any = ()) -> None:
        """Inside a late-turn write: `sql` must find no row once the turn is taken, else the write runs again with
        the turn first (see the module docstring). Nothing to check when the turn was taken at BEGIN."""
        if not self._late:
            return
        query = self._bound(sql, params)
        if b"$hk$" in query:
            raise TurnNeeded  # cannot be quoted in the check's body: take the turn first instead
        self._turn_checks.append(
            b"DO $hk$ BEGIN IF EXISTS (" + query + b") THEN RAISE EXCEPTION 'changed before the writers'' turn' "
            b"USING ERRCODE = '" + CHANGED_BEFORE_TURN.encode() + b"'; END IF; END $hk$"
        )

    def write(self, fn: Callable[[], T], *, late_turn: bool = False) -> T:
        """Run `fn` in one transaction, in the board's writers' turn, and return once its commit is durable;
        retried whole (with jitter) if PostgreSQL aborts it for a conflict anyway. `fn` must only touch the database
        (it may run more than once).

        The turn: a transaction-level advisory lock on the board, the first statement after BEGIN, let go by COMMIT.
        Writers of one board run one at a time, as on SQLite: none is aborted for a conflict (concurrent claims of
        the queue's head aborted each other 1-7 times per task when writers overlapped: bench/pg_compare.py), and
        event ids commit in order. The commit is asynchronous inside the turn and made durable right after it, in
        the same round trip (_commit_and_end_turn; see the module docstring).

        `late_turn`: take the turn only with the COMMIT (see the module docstring); `fn` calls need_turn() when it
        needs more than that allows, and check_at_turn() for what must still hold once the turn is taken.
        """
        if self._in_write:
            return fn()
        delay = 0.001
        for attempt in range(WRITE_ATTEMPTS):
            self._wrote_event = False
            self._held_events = []
            self._held_writes = []
            self._turn_checks = []
            self._savepoints = {}
            self._late = late_turn
            try:
                self._tx_now = self._begin(turn=not late_turn)
            except BoardUnreachable:
                # An idle connection the server dropped (a restart, pg_terminate_backend) is only found out now:
                # nothing of this transaction has run, so one fresh connection is tried before giving up.
                self.close()
                self._tx_now = self._begin(turn=not late_turn)
            self._in_write = True
            try:
                result = fn()
                self._commit_and_end_turn()
            except BaseException as exc:
                self._held_events = []
                self._held_writes = []
                self._end("ROLLBACK")  # lets the turn go too (a transaction's lock)
                cause = exc.__cause__ if isinstance(exc, HermesError) else exc
                if late_turn and (isinstance(exc, TurnNeeded) or
                                  getattr(cause, "sqlstate", None) == CHANGED_BEFORE_TURN):
                    late_turn = False  # again, with the turn from BEGIN: not a collision, no backoff
                    continue
                if isinstance(cause, _RETRY) and attempt < WRITE_ATTEMPTS - 1:
                    if self._stopping():
                        raise WriteInterrupted(f"{self.where}: not retrying a colliding write (stopping)") from exc
                    time.sleep(delay + random.uniform(0, delay))
                    delay = min(delay * 2, 0.1)
                    continue
                raise
            finally:
                self._in_write = False
                self._late = False
                self._tx_now = None
            if self._wrote_event:
                self._wrote_event = False
                for hook in self._event_hooks:
                    hook()
            return result
        raise BoardBusy(f"{self.where}: writers kept colliding; retry later")

    def _commit_and_end_turn(self) -> None:
        """The held-back statements, NOTIFY (if an event was written), COMMIT (which ends the turn, a transaction's
        lock) and the wait for durability, in one round trip. The wait is wait_durable's statement, sent after COMMIT
        in the same batch: it runs as a transaction of its own (synchronous, the session's default), outside the
        turn, and only when the committed transaction wrote anything (had an xid): a session setting carries that
        across the COMMIT. The batch is answered after its last statement, so the caller hears after the flush."""
        turn: list[bytes] = []
        if self._late:  # the turn, then what must still hold under it, then the rest (see the module docstring)
            turn = [self._turn_lock().encode(), *self._turn_checks]
        writes, self._held_writes = self._held_writes, []
        held, self._held_events = self._held_events, []
        notify = [f"SELECT pg_notify('{self.channel}', '')".encode()] if self._wrote_event else []
        wrote = b"SELECT set_config('hermes_kanban.wrote', (pg_current_xact_id_if_assigned() IS NOT NULL)::text, false)"
        flush = _DURABLE + b" WHERE current_setting('hermes_kanban.wrote') = 'true'"
        self._cursor(b"; ".join([*turn, *writes, *held, *notify, wrote, b"COMMIT", flush]), (), last=False)

    def wait_durable(self) -> None:
        """Wait until this session's last commit is on disk (see the module docstring): a transactional logical
        message takes an xid and writes one WAL record, so this statement's own synchronous COMMIT flushes the WAL
        through it, our asynchronous commit included, and every commit this session has seen. Outside the turn:
        concurrent writers share the flush."""
        self._cursor(_DURABLE, ())

    def _turn_lock(self) -> str:
        return f"SELECT pg_advisory_xact_lock(hashtext('{self.schema}'))"

    def _begin(self, *, turn: bool = True) -> float:
        """BEGIN, wait for the board's writers' turn (a transaction's advisory lock, let go by COMMIT or ROLLBACK;
        waiting is in the server, in arrival order), commit asynchronously (see the module docstring), and read the
        server's clock once the turn is ours: one round trip. A stop request cannot interrupt the wait, but a turn
        is one short transaction long. Without `turn` (a late turn), the turn is taken with the COMMIT."""
        try:
            cur = self._cursor(
                "BEGIN ISOLATION LEVEL READ COMMITTED; "
                + (f"{self._turn_lock()}; " if turn else "")
                + "SET LOCAL synchronous_commit TO off; SET LOCAL enable_bitmapscan TO off; "
                "SET LOCAL plan_cache_mode TO force_generic_plan; "
                "SELECT extract(epoch FROM clock_timestamp())::float8", ()
            )
            while cur.nextset():  # the clock is the last result
                pass
            found = cur.fetchone()
        except BaseException:
            self._end("ROLLBACK")
            raise
        assert found is not None, "SELECT of the clock returned no row"
        return float(found[0])

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass  # closing a connection the server already dropped
            self._conn = None
