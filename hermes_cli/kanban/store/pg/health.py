"""What `doctor` asks a PostgreSQL board's server: its version, whether it takes writes, the fleet's dispatchers, and
`amcheck` of the board's indexes (where the extension exists or may be created)."""

from __future__ import annotations

from typing import Any

import psycopg

from .database import PgDatabase, one_line


def server_info(db: PgDatabase) -> dict[str, Any]:
    """The server's version and whether this session can write (a hot standby, or default_transaction_read_only,
    cannot)."""
    row = db.row("SELECT current_setting('server_version') AS version, "
                 "current_setting('server_version_num')::int AS version_num, pg_is_in_recovery() AS in_recovery, "
                 "current_setting('default_transaction_read_only') = 'on' AS read_only")
    assert row is not None
    return row


def dispatchers(db: PgDatabase) -> list[dict[str, Any]]:
    """The fleet's registered dispatchers (pg v2), with their heartbeat's age by the server's clock."""
    return db.rows("SELECT id, host, pid, started_at, heartbeat_at, lease_s, "
                   "extract(epoch FROM clock_timestamp())::float8 - heartbeat_at AS age_s "
                   "FROM dispatchers ORDER BY id")


def _amcheck_schema(conn: psycopg.Connection[Any]) -> str | None:
    found = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                         "WHERE e.extname = 'amcheck'").fetchone()
    return None if found is None else str(found[0])


def amcheck(db: PgDatabase, *, full: bool = False) -> dict[str, Any]:
    """`bt_index_check` (with `full`: `heapallindexed` too) of every B-tree index of the board's schema.

    The extension is created (in `public`, never in the board's schema) when it is missing and this role may; when
    it cannot be (not installed on the server, or no privilege) the result says so: `available` False and why."""
    conn = db.conn
    try:
        where = _amcheck_schema(conn)
        if where is None:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA public")
            except psycopg.Error as exc:
                return {"available": False, "reason": one_line(exc), "indexes": [], "problems": []}
            where = _amcheck_schema(conn) or "public"
        indexes = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam "
            "WHERE n.nspname = %s AND a.amname = 'btree' ORDER BY 1", (db.schema,)).fetchall()]
        problems: list[str] = []
        for name in indexes:
            try:
                conn.execute(f'SELECT "{where}".bt_index_check(%s::regclass, %s)',
                             (f'"{db.schema}"."{name}"', full))
            except psycopg.errors.InsufficientPrivilege as exc:
                return {"available": False, "reason": one_line(exc), "indexes": [], "problems": []}
            except psycopg.Error as exc:
                problems.append(f"{name}: {one_line(exc)}")
        return {"available": True, "reason": None, "indexes": indexes, "problems": problems}
    except psycopg.OperationalError as exc:
        raise db._translate(exc) from exc
