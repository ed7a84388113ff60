"""What the PostgreSQL engine promises beyond the shared store contract (tests/store runs on both engines):
migrations from every earlier pg schema, the server's clock for leases, event ids in commit order under concurrent
writers, exactly-once claims across processes, and the unique idempotency index."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psycopg
import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.paths import resolve
from hermes_cli.kanban.store.pg import schema as pg_schema
from hermes_cli.kanban.store.pg.database import PgDatabase, schema_name
from hermes_cli.kanban.store.pg.opening import current_version, migrate


@pytest.mark.parametrize("version", range(1, pg_schema.LATEST))
def test_a_board_of_every_earlier_pg_schema_is_upgraded_with_its_rows(pg_url: str, version: int) -> None:
    db = PgDatabase(pg_url, resolve("default"))
    migrate(db, target=version, create=True)
    assert current_version(db) == version
    db.write(lambda: db.execute(
        "INSERT INTO tasks(id, title, status, created_at, updated_at) VALUES ('t_0123456789ab', 'old', 'ready', 1, 1)"))
    db.write(lambda: db.execute("INSERT INTO runs(task_id, started_at, lease_expires_at) VALUES "
                                "('t_0123456789ab', 1, 2)"))
    db.close()
    with Board.open() as board:
        assert current_version(board.db) == pg_schema.LATEST  # type: ignore[arg-type]
        assert board.get_task("t_0123456789ab").title == "old"
        claim = board.claim(worker="w")
        assert claim is not None and claim.task_id == "t_0123456789ab"
        assert claim.run_id > 1, "a run id of the old schema was handed out again"


def test_leases_are_measured_by_the_server_clock_not_the_host(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose clock is an hour fast neither extends nor shortens a lease: lease times come from the server."""
    with Board.open() as board:
        board.create_task("skewed")
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)  # this host's clock is an hour ahead
        claim = board.claim(worker="w", ttl=60)
        monkeypatch.setattr(time, "time", real)
        assert claim is not None
        server_now = float(board.db.value("SELECT extract(epoch FROM clock_timestamp())::float8"))
        assert abs(claim.lease_expires_at - (server_now + 60)) < 5, (claim.lease_expires_at, server_now)


def test_the_unique_index_enforces_idempotency_keys(pg_url: str) -> None:
    with Board.open() as board:
        board.create_task("x", idempotency_key="k")
    with psycopg.connect(pg_url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(f'INSERT INTO "{schema_name("default")}".tasks(id, title, status, idempotency_key, created_at, '
                     "updated_at) VALUES ('t_ffffffffffff', 'dup', 'ready', 'k', 0, 0)")


WRITER = r"""
import sys
from hermes_cli.kanban import Board
n = int(sys.argv[1])
with Board.open() as board:
    for i in range(n):
        board.create_task(f"task {i}")
"""

CLAIMER = r"""
import json, sys
from hermes_cli.kanban import Board
done = []
with Board.open() as board:
    misses = 0
    while misses < 20:
        c = board.claim(worker=sys.argv[1])
        if c is None:
            misses += 1
            continue
        misses = 0
        board.complete(c.task_id, c.run_id, summary=sys.argv[1])
        done.append([c.task_id, c.run_id])
print(json.dumps(done))
"""


def _spawn(code: str, *args: str, output: bool = True) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], text=True, env=os.environ,
                            stdout=subprocess.PIPE if output else subprocess.DEVNULL)


@pytest.mark.parametrize("writer", ["create", "claim and complete"])
def test_a_reader_following_event_ids_misses_nothing_while_writers_commit_concurrently(pg_url: str,
                                                                                        writer: str) -> None:
    """Readers follow `id > cursor`. On PostgreSQL ids are handed out before COMMIT, so without the board's event
    lock a later id can commit first and a reader that already moved past it never sees the earlier one. Workers
    that claim and complete mix turn-first writes (claims) with late-turn ones (completions take the turn only with
    their COMMIT: their event ids must still come from inside it)."""
    with Board.open() as board:
        if writer == "create":
            writers = [_spawn(WRITER, "150", output=False) for _ in range(4)]
        else:
            board.db.write(lambda: [board.create_task(f"job {i}") for i in range(200)])  # 200 events
            writers = [_spawn(CLAIMER, f"w{i}") for i in range(4)]  # 400 more: claimed, completed
        seen: list[int] = []
        cursor = 0
        while any(w.poll() is None for w in writers):
            for event in board.events(cursor):
                seen.append(event.id)
                cursor = event.id
        for w in writers:
            w.communicate(timeout=240)
            assert w.returncode == 0
        seen += [e.id for e in board.events(cursor)]
        every = [e.id for e in board.events(0)]
    assert len(every) == 600
    assert sorted(seen) == every, f"{len(set(every) - set(seen))} events were committed behind a reader's cursor"


def test_concurrent_claimers_on_one_board_take_every_task_exactly_once(pg_url: str) -> None:
    with Board.open() as board:
        for i in range(120):
            board.create_task(f"job {i}")
    claimers = [_spawn(CLAIMER, f"w{i}") for i in range(4)]
    import json

    done: list[list[object]] = []
    for c in claimers:
        out, _ = c.communicate(timeout=240)
        assert c.returncode == 0
        done += json.loads(out)
    task_ids = [d[0] for d in done]
    run_ids = [d[1] for d in done]
    assert len(task_ids) == 120 and len(set(task_ids)) == 120, "a task was completed twice or not at all"
    assert len(set(run_ids)) == 120, "a run id (fencing token) was handed out twice"
    with Board.open() as board:
        assert board.counts()["done"] == 120
        assert board.db.value("SELECT count(*) FROM runs") == 120, "a task was claimed by two runs"


FAST = r"""
import sys
from hermes_cli.fast import run
code = run(["kanban", "create", "from the fast path", "--json"])
print(code, "click" in sys.modules, file=sys.stderr)
"""


def test_the_hot_verbs_take_the_fast_path_on_a_postgres_board(pg_url: str) -> None:
    """A PostgreSQL board has no local file: the fast path must not take that for a missing board and fall back."""
    with Board.open():
        pass
    p = subprocess.run([sys.executable, "-c", FAST], capture_output=True, text=True, timeout=120, env=os.environ)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip().splitlines()[-1] == "0 False", p.stderr
    with Board.open() as board:
        assert [t.title for t in board.list_tasks()] == ["from the fast path"]


UNREACHABLE = r"""
import sys
from hermes_cli.fast import main
try:
    main(["kanban", "create", "while the server is gone", "--json"])
finally:
    print("click imported:", "click" in sys.modules, file=sys.stderr)
"""


def test_an_unreachable_server_is_reported_by_the_fast_path_itself(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path hands a failing command to the click CLI, which runs it again. A lost PostgreSQL connection may
    have committed the command: it must be reported as it is, never run a second time."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    url = f"postgresql://postgres@127.0.0.1:{port}/gone"
    (tmp_path / "hermes-home").mkdir(exist_ok=True)
    monkeypatch.setenv("HERMES_KANBAN_URL", url)
    monkeypatch.setenv("HERMES_KANBAN_PG_CONNECT_TIMEOUT", "2")
    fast = subprocess.run([sys.executable, "-c", UNREACHABLE], capture_output=True, text=True, timeout=120,
                          env=os.environ)
    slow = subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", "create", "while the server is gone",
                           "--json"], capture_output=True, text=True, timeout=120, env=os.environ)
    assert fast.returncode == slow.returncode == 4
    assert fast.stdout == slow.stdout and '"code": "unreachable"' in fast.stdout
    assert fast.stderr.splitlines()[0] == slow.stderr.strip()
    assert fast.stderr.splitlines()[-1] == "click imported: False", fast.stderr


def test_a_write_returns_only_once_its_commit_is_flushed_to_disk(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers COMMIT inside the board's turn with synchronous_commit off (so the turn is not held through the WAL
    flush) and then wait for the flush outside it: a write must not return before its commit record is on disk.
    The WAL position is read as the transaction's last statement, so the commit record lies beyond it; the server's
    flush position must have passed it when `write` returns. (Without the wait, the WAL writer flushes an
    asynchronous commit only every wal_writer_delay, 200 ms by default, so nearly every one of these would fail.)
    The test server runs with synchronous_commit off (fsync=False): this board's sessions turn it on, as a durable
    server has it."""
    monkeypatch.setenv("HERMES_KANBAN_URL", pg_url + "?options=-c%20synchronous_commit%3Don")
    with Board.open() as board:
        db = board.db
        unflushed = []
        for i in range(20):
            def create(i: int = i) -> object:
                board.create_task(f"durable {i}")
                return db.value("SELECT pg_current_wal_insert_lsn()::text")

            before_commit = db.write(create)
            flushed = db.value("SELECT pg_current_wal_flush_lsn() >= ?::pg_lsn", (before_commit,))
            if not flushed:
                unflushed.append(i)
    assert unflushed == [], f"writes {unflushed} returned before their commit was flushed"
