"""Opening (and creating) a board that lives in PostgreSQL: connect, make its schema on first use, migrate."""

from __future__ import annotations

from ...core.errors import NotFound, StorageError
from ...core.paths import BoardPaths, ensure_private_dir
from .database import PgDatabase, one_line, open_connection, other_board_connections, redact
from .schema import LATEST, MIGRATIONS

#: the meta row naming the board a schema holds
SLUG_KEY = "board_slug"


def schema_exists(db: PgDatabase) -> bool:
    return bool(db.value("SELECT 1 FROM pg_namespace WHERE nspname = ?", (db.schema,)))


def current_version(db: PgDatabase) -> int:
    if not db.value("SELECT to_regclass(?) IS NOT NULL", (f'"{db.schema}".schema_migrations',)):
        return 0
    return int(db.value("SELECT coalesce(max(version), 0) FROM schema_migrations") or 0)


def migrate(db: PgDatabase, target: int = LATEST, *, create: bool = False) -> int:
    """Bring the board's schema up to `target`; with `create`, make the schema first. Returns the version found."""
    found = current_version(db)
    if found > LATEST:
        raise StorageError(f"{db.where} has schema pg v{found}, newer than this hermes (pg v{LATEST}); upgrade "
                           "hermes-kanban")
    if found >= target:
        return found

    def step() -> int:
        # One migrator at a time per board (two hosts starting at once): the lock is held to COMMIT.
        db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", ("migrate:" + db.schema,))
        if create:
            db.execute(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"')
        elif not schema_exists(db):
            # the same words as for a SQLite board (scripts match them); `boards list` shows where boards are
            raise NotFound(f"board {db.paths.slug} does not exist (see: hermes kanban boards create {db.paths.slug})")
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations(version integer PRIMARY KEY, "
                   "applied_at double precision NOT NULL)")
        before = int(db.value("SELECT coalesce(max(version), 0) FROM schema_migrations") or 0)
        for version in range(before + 1, target + 1):
            MIGRATIONS[version - 1](db)
            db.execute("INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)", (version, db.clock()))
        if before == 0:
            db.created = True
            # The schema's name is not always the slug (store/pg/database.py schema_name): `boards list` of a
            # fleet's server reads the slug from here.
            db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                       (SLUG_KEY, db.paths.slug))
        return before

    return db.write(step)


def connect(paths: BoardPaths, url: str, *, create: bool) -> PgDatabase:
    """Open the board `paths.slug` in the PostgreSQL database at `url` (NotFound unless it exists or `create`).
    The board's local directory still holds what is per host: its spool, logs, config and workspaces."""
    db = PgDatabase(url, paths)
    try:
        migrate(db, create=create)
        # Only now: a board that does not exist gets no directory (a typo of a slug leaves nothing behind).
        ensure_private_dir(paths.dir)
    except BaseException:
        db.close()
        raise
    return db


def board_slugs(url: str) -> list[str]:
    """The boards the PostgreSQL database at `url` holds (schemas `hk_*` with a board's meta row)."""
    import psycopg

    conn = open_connection(url)
    try:
        schemas = [r[0] for r in conn.execute(
            "SELECT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid "
            "WHERE n.nspname LIKE 'hk\\_%' AND c.relname = 'meta' AND c.relkind = 'r'")]
        slugs: list[str] = []
        for schema in schemas:
            found = conn.execute(f'SELECT value FROM "{schema}".meta WHERE key = %s', (SLUG_KEY,)).fetchone()
            if found is not None:
                slugs.append(str(found[0]))
        return sorted(slugs)
    except psycopg.Error as exc:
        raise StorageError(f"cannot list the boards at {redact(url)}: {one_line(exc)}") from None
    finally:
        conn.close()


def drop_schema(paths: BoardPaths, url: str) -> str:
    """Drop the board's schema (all its tasks, runs and events) for `boards rm --drop-schema`. Refused (Conflict)
    while another hermes connection to this board is open. Returns the schema's name."""
    import psycopg

    from ...core.errors import Conflict
    from .database import schema_name

    schema = schema_name(paths.slug)
    conn = open_connection(url, autocommit=False)
    try:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("migrate:" + schema,))
        others = other_board_connections(conn, paths.slug)
        if others:
            raise Conflict(f"board {paths.slug} is open in {len(others)} other connection(s) to {redact(url)} "
                           f"(backend pid {others[0][0]}, from {others[0][1]}): stop its dispatchers and workers first")
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.commit()
        return schema
    except psycopg.Error as exc:
        raise StorageError(f"cannot drop schema {schema} of board {paths.slug} at {redact(url)}: {one_line(exc)}"
                           ) from None
    finally:
        conn.close()
