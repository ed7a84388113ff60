"""One connection to a hub, and the hub's errors. A hub is a PostgreSQL database; everything of ours lives in its
schema `hermes_hub`, so the same database may also hold PostgreSQL boards (`hk_<slug>`).

Transactions are READ COMMITTED: every write of the sync is an idempotent upsert keyed by (board id, ...), guarded by
the sync lease row taken FOR UPDATE, so SERIALIZABLE would only add retries. The connection has keepalives short
enough that a partition is noticed in seconds (reference/postgres-queues.md, "Partitions").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ...core.errors import Conflict, HermesError, NotFound, StorageError
from ...core.hubconf import redact
from ..pg.database import connect_timeout, one_line

SCHEMA = "hermes_hub"
#: the server ends our session when it sits idle inside a transaction this long (a cut-off client's ghost)
IDLE_TX_TIMEOUT_MS = 20_000
#: a statement gives up waiting for a row lock after this long (the sync retries, or exits 4 with --once)
LOCK_TIMEOUT_MS = 5_000


class HubError(StorageError):
    """The hub could not take or give what was asked."""

    code = "hub"


class HubUnreachable(HubError):
    """The hub cannot be reached (down, partitioned, or it dropped our connection). Local boards keep working."""

    code = "hub_unreachable"


class HubAuthFailed(HubError):
    """The hub refused our credentials or our role lacks a permission: no retry can fix that."""

    code = "hub_auth"


class HubVersionRefused(HubError):
    """The hub's schema is more than one version ahead of this writer."""

    code = "hub_version"


class HubMissing(NotFound):
    """No hub schema in that database yet (nothing has synced to it)."""

    code = "hub_missing"


class SyncLeaseLost(Conflict):
    """Another sync took this board's lease over (ours went stale): this one stops."""

    code = "sync_lease_lost"


_AUTH_STATES = {"28000", "28P01", "42501"}
_AUTH_WORDS = ("password authentication failed", "no pg_hba.conf entry", "permission denied", "authentication failed")


def is_auth_failure(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None)
    if state in _AUTH_STATES or isinstance(exc, (pg_errors.InsufficientPrivilege,
                                                  pg_errors.InvalidAuthorizationSpecification,
                                                  pg_errors.InvalidPassword)):
        return True
    text = str(exc)
    if "role \"" in text and "does not exist" in text:
        return True
    return any(w in text for w in _AUTH_WORDS)


class HubLink:
    """One autocommit connection to the hub at `url`, reconnected on the next call after it was lost."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = redact(url)
        self._conn: psycopg.Connection[Any] | None = None
        self._in_tx = False

    @property
    def where(self) -> str:
        return f"hub {self.name}"

    def translate(self, exc: BaseException) -> HermesError:
        if isinstance(exc, HermesError):
            return exc
        if is_auth_failure(exc):
            return HubAuthFailed(f"{self.where} refused us: {one_line(exc)} (fix the role or password in the hub URL, "
                                 "or grant it USAGE, CREATE on the database)")
        if isinstance(exc, pg_errors.LockNotAvailable):
            return HubError(f"{self.where}: the board's sync lease row stayed locked for {LOCK_TIMEOUT_MS / 1000:g}s "
                            f"(a previous connection of this sync the server has not dropped yet); retry shortly")
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return HubUnreachable(f"{self.where} cannot be reached ({one_line(exc)}); local boards keep working and "
                                  "the sync catches up when it is back (see: hermes kanban doctor)")
        if isinstance(exc, pg_errors.UndefinedTable | pg_errors.InvalidSchemaName):
            return HubMissing(f"{self.where} has no hub schema yet (run: hermes kanban sync --hub URL)")
        return HubError(f"{self.where}: {one_line(exc)}")

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._in_tx:
                raise HubUnreachable(f"lost the connection to {self.where} inside a transaction")
            try:
                self._conn = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=connect_timeout(), keepalives=1, keepalives_idle=5,
                    keepalives_interval=2, keepalives_count=3, tcp_user_timeout=15_000,
                    application_name="hermes-kanban-sync",
                )
            except psycopg.Error as exc:
                raise self.translate(exc) from None
            try:
                # A cut-off host's old backend may sit idle in a transaction holding our lease row's lock for
                # hours (the server notices a dead client only by TCP keepalive): the server ends such a session
                # after IDLE_TX_TIMEOUT_MS, and a statement waits for a lock at most LOCK_TIMEOUT_MS (then the
                # sync retries), so a reconnected sync is never stuck behind its own ghost.
                self._conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_TX_TIMEOUT_MS}; "
                                   f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            except psycopg.Error as exc:
                self.close()
                raise self.translate(exc) from None
        return self._conn

    def _cursor(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        try:
            return self.conn.execute(sql, params)
        except psycopg.Error as exc:
            raise self.translate(exc) from exc

    def rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        cur = self._cursor(sql, params)
        if cur.description is None:
            return []
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def row(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def value(self, sql: str, params: Any = None) -> Any:
        cur = self._cursor(sql, params)
        found = cur.fetchone()
        return None if found is None else found[0]

    def execute(self, sql: str, params: Any = None) -> int:
        return self._cursor(sql, params).rowcount

    def clock(self) -> float:
        """Seconds since the epoch by the hub's clock (every lease age is measured by it)."""
        return float(self.value("SELECT extract(epoch FROM clock_timestamp())::float8"))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One hub transaction: COMMIT at the end, ROLLBACK on any error (a lost connection rolls back by itself)."""
        self._cursor("BEGIN")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._in_tx = False
            self._end("ROLLBACK")
            raise
        self._in_tx = False
        self._cursor("COMMIT")

    def _end(self, statement: str) -> None:
        if self._conn is None or self._conn.closed or self._conn.broken:
            return
        try:
            self._conn.execute(statement)
        except psycopg.Error:
            # The transaction already ended with the error or the connection; the next call reconnects.
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass  # closing a connection the server already dropped
            self._conn = None
