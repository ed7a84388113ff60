"""Numbered schema migrations, applied at open inside one IMMEDIATE transaction.

`PRAGMA user_version` holds the schema version; `schema_migrations` records when each step ran. Each migration is a
function of the connection; they only ever add. tests/store/test_migrations.py upgrades a fixture database written
by every earlier version (tests/fixtures/schema_v*.db).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import StorageError
from .connection import Database


def _v1(db: Database) -> None:
    """Tasks, dependencies, runs, comments and the event log."""
    db.execute(
        """
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL);
        CREATE TABLE tasks(
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL CHECK (length(title) > 0),
            body TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL CHECK (status IN ('todo','ready','running','review','blocked','done','archived')),
            priority INTEGER NOT NULL DEFAULT 0,
            tenant TEXT,
            command TEXT,
            idempotency_key TEXT,
            review_required INTEGER NOT NULL DEFAULT 0,
            max_runtime_s REAL,
            max_retries INTEGER NOT NULL DEFAULT 3,
            attempts INTEGER NOT NULL DEFAULT 0,
            current_run_id INTEGER,
            lease_expires_at REAL,
            retry_at REAL,
            summary TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            completed_at REAL
        );
        CREATE UNIQUE INDEX tasks_idempotency_key ON tasks(idempotency_key)
            WHERE idempotency_key IS NOT NULL AND status != 'archived';
        CREATE INDEX tasks_claim_order ON tasks(status, priority DESC, created_at);
        CREATE INDEX tasks_tenant ON tasks(tenant) WHERE tenant IS NOT NULL;
        CREATE TABLE links(
            parent_id TEXT NOT NULL REFERENCES tasks(id),
            child_id TEXT NOT NULL REFERENCES tasks(id),
            created_at REAL NOT NULL,
            PRIMARY KEY (parent_id, child_id)
        ) WITHOUT ROWID;
        CREATE INDEX links_child ON links(child_id, parent_id);
        CREATE TABLE runs(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL REFERENCES tasks(id),
            worker TEXT,
            started_at REAL NOT NULL,
            heartbeat_at REAL,
            lease_expires_at REAL NOT NULL,
            ended_at REAL,
            outcome TEXT,
            summary TEXT
        );
        CREATE INDEX runs_task ON runs(task_id, id);
        CREATE TABLE comments(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL REFERENCES tasks(id),
            author TEXT,
            body TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX comments_task ON comments(task_id, id);
        CREATE TABLE events(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT,
            run_id INTEGER,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL
        );
        CREATE INDEX events_task ON events(task_id, id);
        """
    )


def _v2(db: Database) -> None:
    """Worker identity on runs (pid + start time, never a bare pid), the dispatcher lease, persistent subscriptions."""
    db.execute(
        """
        ALTER TABLE runs ADD COLUMN host TEXT;
        ALTER TABLE runs ADD COLUMN pid INTEGER;
        ALTER TABLE runs ADD COLUMN pid_create_time REAL;
        ALTER TABLE runs ADD COLUMN exit_code INTEGER;
        CREATE INDEX runs_open ON runs(ended_at) WHERE ended_at IS NULL;
        CREATE TABLE dispatcher_lease(
            id INTEGER PRIMARY KEY CHECK (id = 1),
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            pid_create_time REAL,
            epoch INTEGER NOT NULL,
            acquired_at REAL NOT NULL,
            refreshed_at REAL NOT NULL
        );
        CREATE TABLE subscriptions(
            name TEXT PRIMARY KEY,
            cursor INTEGER NOT NULL DEFAULT 0,
            kinds TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        """
    )


MIGRATIONS: list[Callable[[Database], None]] = [_v1, _v2]
LATEST = len(MIGRATIONS)


def current_version(db: Database) -> int:
    return int(db.value("PRAGMA user_version") or 0)


def migrate(db: Database, target: int = LATEST) -> int:
    """Bring the schema up to `target` (default: latest). Returns the version found before migrating."""
    found = current_version(db)
    if found > LATEST:
        raise StorageError(
            f"board {db.paths.db} has schema v{found}, newer than this hermes (v{LATEST}); upgrade hermes-kanban"
        )
    if found >= target:
        return found
    if found == 0 and db.value("SELECT count(*) FROM sqlite_schema") != 0:
        raise StorageError(
            f"{db.paths.db} is a SQLite database but not a hermes board (it has tables and no schema version); "
            "refusing to touch it"
        )

    def step() -> int:
        before = current_version(db)  # re-read under the write lock: another process may have migrated
        for version in range(before + 1, target + 1):
            MIGRATIONS[version - 1](db)
            db.execute("INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)", (version, time.time()))
            db.execute(f"PRAGMA user_version={version}")
        return before

    return db.write(step)
