"""`dump_board(path)`: a whole board as plain data, to assert that a rejected command changed nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import apsw
import psycopg

from hermes_cli.kanban.store.pg.database import schema_name


def dump_pg_board(url: str, slug: str) -> dict[str, Any]:
    """Every row of every table of a PostgreSQL board and its columns. Not the identity sequences' positions: a
    PostgreSQL sequence is not transactional, so a rolled-back change may leave a gap in the ids (never a reuse)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return _dump_schema(conn, schema_name(slug))


def dump_pg_boards(url: str) -> dict[str, Any]:
    """Every board (schema `hk_*`) of the PostgreSQL database at `url`, keyed by schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        schemas = [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'hk\\_%' ORDER BY 1")]
        return {s: _dump_schema(conn, s) for s in schemas}


def _dump_schema(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    tables = [r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,))]
    out: dict[str, Any] = {t: sorted(conn.execute(f'SELECT * FROM "{schema}"."{t}"').fetchall(), key=repr)
                           for t in tables}
    out["__columns__"] = conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
        "ORDER BY 1, 2", (schema,)).fetchall()
    return out


def dump_board(db_path: Path | str) -> dict[str, Any]:
    """Every row of every table (sqlite_sequence included), the schema and the user_version, read through a
    separate read-only connection. With HERMES_KANBAN_URL set (a PostgreSQL board), the same from the board's
    schema, named by the board directory `db_path` is in."""
    if os.environ.get("HERMES_KANBAN_URL"):
        return dump_pg_board(os.environ["HERMES_KANBAN_URL"], Path(db_path).parent.name)
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
        out: dict[str, Any] = {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
        out["__schema__"] = conn.execute("SELECT type, name, sql FROM sqlite_schema ORDER BY type, name").fetchall()
        out["__user_version__"] = conn.execute("PRAGMA user_version").fetchall()[0][0]
        return out
    finally:
        conn.close()
