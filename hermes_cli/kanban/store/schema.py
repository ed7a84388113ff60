"""Numbered schema migrations, applied at open inside one IMMEDIATE transaction.

`PRAGMA user_version` holds the schema version; `schema_migrations` records when each step ran. Each migration is a
function of the connection; they only ever add. tests/store/test_migrations.py upgrades a fixture database written
by every earlier version (tests/fixtures/schema_v*.db).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..core.errors import StorageError
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


#: tasks as _v1 created them, with the statuses widened (v3 adds `triage`) and v3's columns appended
_TASKS_V3 = """
        CREATE TABLE tasks(
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL CHECK (length(title) > 0),
            body TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL
                CHECK (status IN ('triage','todo','ready','running','review','blocked','done','archived')),
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
            completed_at REAL,
            assignee TEXT,
            created_by TEXT,
            skills TEXT,
            result TEXT,
            block_kind TEXT,
            workspace TEXT,
            branch TEXT
        )
"""
_V1_TASK_COLUMNS = (
    "id, title, body, status, priority, tenant, command, idempotency_key, review_required, max_runtime_s, "
    "max_retries, attempts, current_run_id, lease_expires_at, retry_at, summary, created_at, updated_at, completed_at"
)


def _v3(db: Database) -> None:
    """The vocabulary of hermes-agent users: assignees (profiles), who created a task, skills, a task's result,
    typed blocks, the `triage` status, a run's result and metadata (handed to children), and where a task runs
    (workspace, branch: stored for the dispatcher).

    SQLite cannot widen a CHECK constraint in place, so `tasks` is rebuilt (create, copy, drop, rename: the
    documented generalized ALTER TABLE procedure). migrate() runs every step with foreign keys off and checks
    them before COMMIT, as that procedure requires.
    """
    db.execute(
        _TASKS_V3.replace("CREATE TABLE tasks(", "CREATE TABLE tasks_v3(", 1)
        + f"; INSERT INTO tasks_v3({_V1_TASK_COLUMNS}) SELECT {_V1_TASK_COLUMNS} FROM tasks;"
        + """
        DROP TABLE tasks;
        ALTER TABLE tasks_v3 RENAME TO tasks;
        CREATE UNIQUE INDEX tasks_idempotency_key ON tasks(idempotency_key)
            WHERE idempotency_key IS NOT NULL AND status != 'archived';
        CREATE INDEX tasks_claim_order ON tasks(status, priority DESC, created_at);
        CREATE INDEX tasks_tenant ON tasks(tenant) WHERE tenant IS NOT NULL;
        CREATE INDEX tasks_assignee ON tasks(assignee, status) WHERE assignee IS NOT NULL;
        ALTER TABLE runs ADD COLUMN result TEXT;
        ALTER TABLE runs ADD COLUMN metadata TEXT;
        """
    )


MIGRATIONS: list[Callable[[Database], None]] = [_v1, _v2, _v3]
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
        broken = db.rows("PRAGMA foreign_key_check")
        if broken:
            raise StorageError(
                f"board {db.paths.db}: migrating to schema v{target} would break {len(broken)} reference(s) "
                f"(first: {broken[0]}); nothing was changed (see: hermes kanban doctor)"
            )
        return before

    # A table rebuild (v3) drops a table other tables reference: foreign keys must be off for the transaction
    # (the pragma is a no-op inside one), and are checked explicitly before COMMIT above.
    db.execute("PRAGMA foreign_keys=OFF")
    try:
        return db.write(step)
    finally:
        db.execute("PRAGMA foreign_keys=ON")
