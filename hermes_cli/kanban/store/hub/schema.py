"""The hub's schema `hermes_hub`, versioned by numbered migrations (its own numbering).

Compatibility rule: a hub at schema version N accepts writers of version N and N-1, so a fleet can upgrade one host
at a time. A writer newer than the hub migrates it up (under an advisory lock: two hosts at once are fine); a writer
older than N-1 is refused with a message naming both versions. A migration must therefore keep the previous
version's writes valid (add columns with defaults, never rename or drop one a writer of N-1 fills).

Tables (every one keyed by the board's stable id, so many hosts' boards share one hub):
- `boards`: identity and where each board was last seen (slug, host, writer version);
- `events`: the boards' events, primary key (board_id, id): a resend changes nothing;
- `tasks`: the latest snapshot of each task, primary key (board_id, id), with `as_of_event` (the newest local event
  the row reflects) so an older snapshot never overwrites a newer one; columns as in a board's `tasks`;
- `acks`: per board, the last event id the hub has (the truth a restarted sync resumes from);
- `sync_leases`: per board, the sync that may write it (holder host, pid, start time; last refresh), single-flight.
"""

from __future__ import annotations

from collections.abc import Callable

from .link import SCHEMA, HubLink, HubMissing, HubVersionRefused


def _v1(link: HubLink) -> None:
    link.execute(
        f"""
        CREATE TABLE {SCHEMA}.hub_meta(key text PRIMARY KEY, value text NOT NULL);
        INSERT INTO {SCHEMA}.hub_meta(key, value) VALUES ('hub_id', md5(random()::text || clock_timestamp()::text));
        CREATE TABLE {SCHEMA}.boards(
            board_id text PRIMARY KEY,
            slug text NOT NULL,
            host text NOT NULL,
            writer_version integer NOT NULL,
            first_seen double precision NOT NULL,
            last_seen double precision NOT NULL
        );
        CREATE TABLE {SCHEMA}.events(
            board_id text NOT NULL,
            id bigint NOT NULL,
            task_id text,
            run_id bigint,
            kind text NOT NULL,
            payload text NOT NULL DEFAULT '{{}}',
            created_at double precision NOT NULL,
            received_at double precision NOT NULL,
            PRIMARY KEY (board_id, id)
        );
        CREATE INDEX events_task ON {SCHEMA}.events(board_id, task_id, id);
        CREATE TABLE {SCHEMA}.tasks(
            board_id text NOT NULL,
            id text NOT NULL,
            title text NOT NULL,
            body text NOT NULL DEFAULT '',
            status text NOT NULL,
            priority bigint NOT NULL DEFAULT 0,
            tenant text,
            command text,
            idempotency_key text,
            review_required bigint NOT NULL DEFAULT 0,
            max_runtime_s double precision,
            max_retries bigint NOT NULL DEFAULT 3,
            attempts bigint NOT NULL DEFAULT 0,
            current_run_id bigint,
            lease_expires_at double precision,
            retry_at double precision,
            summary text,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            completed_at double precision,
            assignee text,
            created_by text,
            skills text,
            result text,
            block_kind text,
            workspace text,
            branch text,
            as_of_event bigint NOT NULL,
            synced_at double precision NOT NULL,
            PRIMARY KEY (board_id, id)
        );
        CREATE INDEX tasks_status ON {SCHEMA}.tasks(board_id, status, priority DESC, created_at);
        CREATE TABLE {SCHEMA}.acks(
            board_id text PRIMARY KEY,
            last_event_id bigint NOT NULL DEFAULT 0,
            events bigint NOT NULL DEFAULT 0,
            updated_at double precision NOT NULL
        );
        CREATE TABLE {SCHEMA}.sync_leases(
            board_id text PRIMARY KEY,
            token bigint NOT NULL DEFAULT 0,
            holder_host text,
            holder_pid bigint,
            holder_started double precision,
            acquired_at double precision,
            refreshed_at double precision
        );
        """
    )


MIGRATIONS: list[Callable[[HubLink], None]] = [_v1]
#: the hub schema version this hermes writes
LATEST = len(MIGRATIONS)


def version(link: HubLink) -> int:
    """The hub's schema version (0: no hub schema in that database yet)."""
    if not link.value("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.schema_migrations",)):
        return 0
    return int(link.value(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_migrations") or 0)


def check_writer(found: int, writer: int, where: str) -> None:
    """Refuse a writer more than one version behind the hub."""
    if found > writer + 1:
        raise HubVersionRefused(
            f"{where} has hub schema v{found} and accepts writers of v{found - 1} and v{found}; this hermes writes "
            f"v{writer}: upgrade hermes-kanban on this host (pip install -U hermes-kanban)"
        )


def prepare(link: HubLink, writer: int = LATEST) -> int:
    """Make the hub ready for a writer of version `writer`: create or migrate it up to `writer`, or refuse the writer
    (HubVersionRefused). Returns the hub's version."""
    found = version(link)
    check_writer(found, writer, link.where)
    if found >= writer:
        return found
    with link.transaction():
        # One migrator at a time (two hosts starting at once); the lock is held to COMMIT.
        link.execute("SELECT pg_advisory_xact_lock(hashtext('hermes_hub:migrate'))")
        link.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        link.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations(version integer PRIMARY KEY, "
                     "applied_at double precision NOT NULL)")
        before = int(link.value(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_migrations") or 0)
        for v in range(before + 1, writer + 1):
            MIGRATIONS[v - 1](link)
            link.execute(f"INSERT INTO {SCHEMA}.schema_migrations(version, applied_at) "
                         "VALUES (%s, extract(epoch FROM clock_timestamp()))", (v,))
    return max(before, writer)


def check_readable(link: HubLink) -> int:
    """A reader needs a hub schema it knows the tables of (any version up to one ahead of ours)."""
    found = version(link)
    if found == 0:
        raise_missing(link)
    check_writer(found, LATEST, link.where)
    return found


def raise_missing(link: HubLink) -> None:
    raise HubMissing(f"{link.where} has no hub schema yet: nothing has synced to it (run: hermes kanban sync "
                     "--hub URL on a host with a board)")
