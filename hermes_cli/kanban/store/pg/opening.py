"""Opening (and creating) a board that lives in PostgreSQL: connect, make its schema on first use, migrate."""

from __future__ import annotations

from ...core.errors import NotFound, StorageError
from ...core.paths import BoardPaths, ensure_private_dir
from .database import PgDatabase
from .schema import LATEST, MIGRATIONS


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
            raise NotFound(f"board {db.paths.slug} does not exist in {db.where.split(' at ', 1)[1]} "
                           f"(see: hermes kanban boards create {db.paths.slug} --url ...)")
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations(version integer PRIMARY KEY, "
                   "applied_at double precision NOT NULL)")
        before = int(db.value("SELECT coalesce(max(version), 0) FROM schema_migrations") or 0)
        for version in range(before + 1, target + 1):
            MIGRATIONS[version - 1](db)
            db.execute("INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)", (version, db.clock()))
        if before == 0:
            db.created = True
        return before

    return db.write(step)


def connect(paths: BoardPaths, url: str, *, create: bool) -> PgDatabase:
    """Open the board `paths.slug` in the PostgreSQL database at `url` (NotFound unless it exists or `create`).
    The board's local directory still holds what is per host: its spool, logs, config and workspaces."""
    ensure_private_dir(paths.dir)
    db = PgDatabase(url, paths)
    try:
        migrate(db, create=create)
    except BaseException:
        db.close()
        raise
    return db
