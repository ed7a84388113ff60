"""One psycopg connection to one PostgreSQL board: the same interface as store.connection.Database, so the store's
SQL and the whole domain run unchanged on either engine.

What differs, and why:
- Writers of one board take turns, as on SQLite: a session advisory lock on the board (the writers' turn) is taken
  before BEGIN and let go with COMMIT. The domain's read-check-write transactions were written for serialized
  writers. The first version let writers overlap under SERIALIZABLE and took the lock only at the first event
  insert: concurrent claims aborted each other (1-7 serialization failures per task at 4-16 workers) and, worse, a
  claim holding a task row and a completion holding the event lock deadlocked (24 deadlocks, each a 1 s stall, and
  9 tasks in 17 s at 16 `complete --next` workers; 0 deadlocks and 74-88 tasks/s with the turn: docs/performance.md).
  Writes still run SERIALIZABLE and are retried on a serialization failure, as a guard.
- Time comes from the database (`clock_timestamp()` read at BEGIN), never the host: hosts' clocks may disagree, the
  server's is the one every lease is measured by.
- Event ids must be handed out in commit order (readers follow `id > cursor`): the writers' turn is held from before
  BEGIN to COMMIT, so no later id commits before an earlier one.
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


_RETRY = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.LockNotAvailable)


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
        self._wrote_event = False
        self._in_write = False
        self._in_read = False
        self._tx_now: float | None = None
        self._rowcount = 0
        self._stop: Callable[[], bool] | None = None
        self._conn: psycopg.Connection[Any] | None = None
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

    def _cursor(self, sql: str, params: Any) -> psycopg.Cursor[Any]:
        try:
            if params:
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
    def rows(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        cur = self._cursor(sql, params)
        if cur.description is None:
            return []
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def row(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def first(self, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
        cur = self._cursor(sql, params)
        if cur.description is None:
            return None
        found = cur.fetchall()
        return tuple(found[0]) if found else None

    def value(self, sql: str, params: Any = ()) -> Any:
        found = self.first(sql, params)
        return None if found is None else found[0]

    def execute(self, sql: str, params: Any = ()) -> None:
        self._cursor(sql, params)

    def changes(self) -> int:
        """Rows changed by the last statement (sqlite3_changes on the other engine)."""
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

    def savepoint(self, name: str) -> None:
        self.execute(f"SAVEPOINT {name}")

    def rollback_to(self, name: str) -> None:
        self.execute(f"ROLLBACK TO SAVEPOINT {name}")

    def release(self, name: str) -> None:
        self.execute(f"RELEASE SAVEPOINT {name}")

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

    def write(self, fn: Callable[[], T]) -> T:
        """Run `fn` in one SERIALIZABLE transaction, in the board's writers' turn, retried whole (with jitter) if
        PostgreSQL aborts it for a conflict anyway. `fn` must only touch the database (it may run more than once).

        The turn: a session advisory lock on the board, taken before BEGIN (so the transaction's snapshot is taken
        after the previous writer committed) and let go after COMMIT. Writers of one board then run one at a time,
        as on SQLite: no two SERIALIZABLE transactions overlap, so none is aborted and retried (concurrent claims of
        the queue's head aborted each other 1-7 times per task: bench/pg_compare.py), and event ids commit in order.
        """
        if self._in_write:
            return fn()
        delay = 0.001
        for attempt in range(WRITE_ATTEMPTS):
            self._wrote_event = False
            try:
                self._take_turn()
            except BoardUnreachable:
                # An idle connection the server dropped (a restart, pg_terminate_backend) is only found out now:
                # nothing of this transaction has run, so one fresh connection is tried before giving up.
                self.close()
                self._take_turn()
            try:
                self._tx_now = self._begin()
            except BaseException:
                self._end_turn()
                raise
            self._in_write = True
            try:
                result = fn()
                if self._wrote_event:
                    self.execute("SELECT pg_notify(?, '')", (self.channel,))
                # COMMIT and the end of the turn in one round trip: no moment where the turn is held by a session
                # that is not in a transaction (idle_in_transaction_session_timeout could not end it then).
                self.execute(f"COMMIT; SELECT pg_advisory_unlock(hashtext('{self.schema}'))")
            except BaseException as exc:
                self._end("ROLLBACK")
                self._end_turn()
                cause = exc.__cause__ if isinstance(exc, HermesError) else exc
                if isinstance(cause, _RETRY) and attempt < WRITE_ATTEMPTS - 1:
                    if self._stopping():
                        raise WriteInterrupted(f"{self.where}: not retrying a colliding write (stopping)") from exc
                    time.sleep(delay + random.uniform(0, delay))
                    delay = min(delay * 2, 0.1)
                    continue
                raise
            finally:
                self._in_write = False
                self._tx_now = None
            if self._wrote_event:
                self._wrote_event = False
                for hook in self._event_hooks:
                    hook()
            return result
        raise BoardBusy(f"{self.where}: writers kept colliding; retry later")

    def _take_turn(self) -> None:
        """Wait for the board's writers' turn (a session advisory lock; see write). Waiting is in the server, in
        arrival order; a stop request cannot interrupt it, but a turn is one short transaction long."""
        self.execute("SELECT pg_advisory_lock(hashtext(?))", (self.schema,))

    def _end_turn(self) -> None:
        """Let the next writer go. On a broken connection there is nothing to do: the server ended the session,
        and its locks with it."""
        self._end(f"SELECT pg_advisory_unlock(hashtext('{self.schema}'))")

    def _begin(self) -> float:
        """BEGIN and read the server's clock in one round trip (two statements in one simple query)."""
        cur = self._cursor(
            "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT extract(epoch FROM clock_timestamp())::float8", ()
        )
        while cur.description is None and cur.nextset():
            pass
        found = cur.fetchone()
        assert found is not None, "SELECT of the clock returned no row"
        return float(found[0])

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass  # closing a connection the server already dropped
            self._conn = None
