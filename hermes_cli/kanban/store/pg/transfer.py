"""Copying a whole board between engines: `backup` of a PostgreSQL board (into a SQLite file) and `boards migrate`
(either way). Every row of every table goes across with its ids; then the target's id sequences are raised to at
least the source's high-water marks, so no run id (fencing token) or event id (reader cursor) is ever handed out
twice by the board, whichever engine it lives in.

What is not copied, on purpose: `schema_migrations` (each engine has its own numbering; the target's first migration
is dated as the source's, so the board keeps its age), SQLite's `sqlite_sequence` (the high-water marks are
installed instead), and PostgreSQL's `dispatchers` registrations and `runs.dispatcher_id` (which dispatcher process
supervised a run: meaningless once the board has moved; live dispatchers register again).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...core.errors import Conflict, StorageError
from ..connection import Database
from .database import PgDatabase

AnyDb = Database | PgDatabase
Progress = Callable[[str, int, int], None]

#: copy order: a table before the tables whose rows reference it
ORDER = ("meta", "tasks", "links", "runs", "comments", "events", "dispatcher_lease", "subscriptions")
#: never copied (see the module docstring)
SKIP_TABLES = {"schema_migrations", "sqlite_sequence", "dispatchers"}
SKIP_COLUMNS = {("runs", "dispatcher_id")}
#: tables whose ids come from a sequence (AUTOINCREMENT / identity): raised on the target after the copy
SEQUENCED = ("runs", "comments", "events")
#: rows per batch (progress is reported per batch)
BATCH = 2000


def tables(db: AnyDb) -> list[str]:
    if isinstance(db, PgDatabase):
        names = [r["table_name"] for r in db.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE'",
            (db.schema,))]
    else:
        names = [r["name"] for r in db.rows("SELECT name FROM sqlite_schema WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
    known = [t for t in ORDER if t in names]
    return known + sorted(t for t in names if t not in ORDER and t not in SKIP_TABLES)


def columns(db: AnyDb, table: str) -> list[str]:
    if isinstance(db, PgDatabase):
        return [r["column_name"] for r in db.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position", (db.schema, table))]
    return [r["name"] for r in db.rows("SELECT name FROM pragma_table_info(?)", (table,))]


def high_water(db: AnyDb, table: str) -> int:
    """The highest id `table` has handed out: its sequence's position or its highest row, whichever is larger."""
    top = int(db.value(f"SELECT coalesce(max(id), 0) FROM {table}") or 0)
    if isinstance(db, PgDatabase):
        seq = db.row(f"SELECT last_value, is_called FROM {sequence_name(db, table)}")
        used = int(seq["last_value"]) if seq and seq["is_called"] else 0
    else:
        used = int(db.value("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?), 0)", (table,)) or 0)
    return max(top, used)


def sequence_name(db: PgDatabase, table: str) -> str:
    name = db.value("SELECT pg_get_serial_sequence(?, 'id')", (f'"{db.schema}".{table}',))
    if name is None:
        raise StorageError(f"{db.where}: table {table} has no id sequence")
    return str(name)


def high_waters(db: AnyDb) -> dict[str, int]:
    return {t: high_water(db, t) for t in SEQUENCED}


def counts(db: AnyDb) -> dict[str, int]:
    return {t: int(db.value(f"SELECT count(*) FROM {t}")) for t in tables(db)}


def check_empty(db: AnyDb) -> None:
    """A move never writes over a board that holds anything (DESIGN: never re-create a schema over an existing
    non-empty database)."""
    for t in ("tasks", "events", "runs", "comments"):
        if db.value(f"SELECT 1 FROM {t} LIMIT 1") is not None:
            where = db.where if isinstance(db, PgDatabase) else str(db.paths.db)
            raise Conflict(f"the target {where} already holds a board with {t}; a move only goes into an empty one "
                           "(remove it first, or pick another database)")


def copy_board(src: AnyDb, dst: AnyDb, progress: Progress | None = None, *, replace: bool = False,
               id_floor: dict[str, int] | None = None) -> dict[str, Any]:
    """Copy every row of `src` into the empty board `dst` in ONE write transaction of `dst`, read from one snapshot
    of `src`, then raise `dst`'s sequences above `src`'s high-water marks (same transaction). `replace` (restore
    into a PostgreSQL board): `dst`'s rows are deleted first in the same transaction, and its sequences end above
    its own old high-water marks too (and above `id_floor`), so no id it handed out is handed out again. Returns
    {"rows": {table: n}, "high_water": {table: id}}."""
    with src.read():
        plan: list[tuple[str, list[str]]] = []
        dst_tables = set(tables(dst))
        for t in tables(src):
            if t not in dst_tables:
                raise StorageError(f"cannot move table {t}: the target board has no such table (upgrade hermes on "
                                   "this host, or move to a board of the same version)")
            src_cols = [c for c in columns(src, t) if (t, c) not in SKIP_COLUMNS]
            dst_cols = set(columns(dst, t))
            missing = [c for c in src_cols if c not in dst_cols]
            if missing:
                raise StorageError(f"cannot move column {t}.{missing[0]}: the target board has no such column")
            plan.append((t, src_cols))
        totals = {t: int(src.value(f"SELECT count(*) FROM {t}")) for t, _ in plan}
        marks = high_waters(src)
        born = src.value("SELECT min(applied_at) FROM schema_migrations")
        batches = {t: _read_all(src, t, cols) for t, cols in plan}

    def write() -> None:
        if replace:
            for t, mark in high_waters(dst).items():
                marks[t] = max(marks[t], mark, (id_floor or {}).get(t, 0))
            for t, _ in reversed(plan):
                # the board's own slug row stays (a backup of a SQLite board has none)
                dst.execute(f"DELETE FROM {t}" + (" WHERE key <> 'board_slug'" if t == "meta" else ""))
        check_empty(dst)
        for t, cols in plan:
            sql = f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            if t == "meta":  # the target's own rows (its slug) give way to the source's
                sql += " ON CONFLICT(key) DO UPDATE SET value = excluded.value"
            done = 0
            for chunk in batches[t]:
                _insert_many(dst, sql, chunk)
                done += len(chunk)
                if progress is not None:
                    progress(t, done, totals[t])
        if born is not None:
            dst.execute("UPDATE schema_migrations SET applied_at = ? WHERE version = "
                        "(SELECT min(version) FROM schema_migrations) AND applied_at > ?", (born, born))
        for t, floor in marks.items():
            if isinstance(dst, PgDatabase):
                called = "true" if floor > 0 else "false"  # false: the next id is 1 (setval cannot go to 0)
                dst.execute(f"SELECT setval('{sequence_name(dst, t)}'::regclass, ?::bigint, {called})",
                            (max(floor, 1),))
            elif floor > 0:
                dst.execute("INSERT INTO sqlite_sequence(name, seq) SELECT ?, 0 WHERE NOT EXISTS "
                            "(SELECT 1 FROM sqlite_sequence WHERE name = ?)", (t, t))
                dst.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ? AND seq < ?", (floor, t, floor))

    dst.write(write)
    return {"rows": totals, "high_water": marks}


def _read_all(db: AnyDb, table: str, cols: list[str]) -> list[list[tuple[Any, ...]]]:
    order = "id" if table in SEQUENCED or table in ("tasks", "dispatcher_lease") else ", ".join(cols[:2])
    rows = [tuple(r[c] for c in cols) for r in db.rows(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")]
    return [rows[i:i + BATCH] for i in range(0, len(rows), BATCH)]


def _insert_many(db: AnyDb, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if isinstance(db, PgDatabase):
        import psycopg

        from .dialect import to_postgres

        try:
            with db.conn.cursor() as cur:
                cur.executemany(to_postgres(sql), [list(db._params(r)) for r in rows])
        except psycopg.Error as exc:
            raise db._translate(exc) from exc
    else:
        import apsw

        from ..connection import translate

        try:
            db.conn.executemany(sql, rows)
        except apsw.Error as exc:
            raise translate(exc, db.paths.db) from exc


def verify_copy(src: AnyDb, dst: AnyDb, copied: dict[str, Any]) -> None:
    """The target holds as many rows as the source did, table by table, and its sequences are at or above the
    source's high-water marks. Raises StorageError otherwise."""
    for t, n in copied["rows"].items():
        got = int(dst.value(f"SELECT count(*) FROM {t}"))
        if t == "meta":
            if got < n:
                raise StorageError(f"the copy of table meta has {got} rows, the board {n}; nothing was switched")
            continue
        if got != n:
            raise StorageError(f"the copy of table {t} has {got} rows, the board {n}; nothing was switched")
    for t, floor in copied["high_water"].items():
        if high_water(dst, t) < floor:
            raise StorageError(f"the copy's {t} ids are below the board's ({high_water(dst, t)} < {floor}); nothing "
                               "was switched")


def export_to_sqlite(src: AnyDb, dest: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Write the board `src` as a new SQLite board file `dest` (which must not exist): made in a private directory
    beside it (the board file and its open-lock), copied, verified, closed, then renamed to `dest`. Returns what
    copy_board returns."""
    import secrets
    import shutil

    from ...core.paths import BoardPaths
    from ..opening import connect
    from ..schema import migrate

    work = dest.parent / f".export-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(work, 0o700)
    try:
        db = connect(BoardPaths(src.paths.slug, work, work / "kanban.db"), create=True)
        try:
            migrate(db)
            copied = copy_board(src, db, progress)
            verify_copy(src, db, copied)
        finally:
            db.close()
        os.rename(work / "kanban.db", dest)
        return copied
    finally:
        shutil.rmtree(work, ignore_errors=True)


def other_connections(paths: Any, url: str) -> list[tuple[Any, ...]]:
    """(pid, client address) of every other hermes connection to this board on the server."""
    import psycopg

    from .database import open_connection, other_board_connections, redact

    try:
        with open_connection(url) as conn:
            return other_board_connections(conn, paths.slug)
    except psycopg.Error as exc:
        raise StorageError(f"cannot list the connections at {redact(url)}: {exc}") from None


def retire_schema(paths: Any, url: str) -> str:
    """Rename the board's schema out of the way (`boards migrate SLUG --to sqlite`): from the commit on, no host can
    open or write the board in PostgreSQL (its workers' reports spool), and the data stays there under the returned
    name until someone drops it. Refused (Conflict) while any other hermes connection to the board is open."""
    import psycopg

    from .database import _identifier, open_connection, other_board_connections, redact, schema_name

    schema = schema_name(paths.slug)
    retired = _identifier("hkmoved_", f"{paths.slug}-{os.urandom(4).hex()}")
    conn = open_connection(url, autocommit=False)
    try:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("migrate:" + schema,))
        others = other_board_connections(conn, paths.slug)
        if others:
            raise Conflict(f"board {paths.slug} is open in {len(others)} other connection(s) to {redact(url)} "
                           f"(backend pid {others[0][0]}): stop its dispatchers, workers and TUIs on every host first")
        conn.execute(f'ALTER SCHEMA "{schema}" RENAME TO "{retired}"')
        conn.commit()
        return retired
    except psycopg.Error as exc:
        raise StorageError(f"cannot set board {paths.slug} aside at {redact(url)}: {exc}") from None
    finally:
        conn.close()


def restore_schema(paths: Any, url: str, retired: str) -> None:
    """Undo retire_schema (a move that failed leaves the source as it was)."""
    from .database import open_connection, schema_name

    with open_connection(url) as conn:
        conn.execute(f'ALTER SCHEMA "{retired}" RENAME TO "{schema_name(paths.slug)}"')


def drop_new_schema(db: PgDatabase) -> None:
    """Drop the schema a failed move into PostgreSQL created (it was empty before the move)."""
    import psycopg

    from .database import open_connection

    db.close()
    try:
        with open_connection(db.url) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE')
    except (psycopg.Error, StorageError):
        pass  # best effort: the move already failed with its own error, and an empty schema is harmless


def file_marks(path: Path) -> tuple[dict[str, int], int]:
    """A SQLite board file's id high-water marks and task count, through a read-only connection of its own (for a
    board whose open-lock is held exclusively: no hermes connection is open)."""
    import apsw

    from ..checks import int_value

    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_NOFOLLOW)
    try:
        conn.setbusytimeout(5000)
        marks = {t: int_value(conn, f"SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = '{t}'), 0), "
                                    f"coalesce((SELECT max(id) FROM {t}), 0))") for t in SEQUENCED}
        return marks, int_value(conn, "SELECT count(*) FROM tasks")
    finally:
        conn.close()
