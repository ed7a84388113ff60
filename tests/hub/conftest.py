"""Hub test helpers: the real `hermes` in subprocesses, a fresh hub database per test (tests/pgserver.py), and the
comparison of a hub with the local board it replicates (every event and every task, column by column)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.store.tasks import TASK_COLUMNS

from .. import pgserver

CMD = [sys.executable, "-m", "hermes_cli.main", "kanban"]
EVENT_COLUMNS = ("id", "task_id", "run_id", "kind", "payload", "created_at")
TASK_FIELDS = tuple(c.strip() for c in TASK_COLUMNS.split(","))


@pytest.fixture
def hub_url() -> str:
    """A fresh, empty hub database on the test server."""
    return pgserver.fresh_database()


def hermes(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*CMD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def last_json(text: str) -> dict[str, Any]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines, "no output"
    data = json.loads(lines[-1])
    assert isinstance(data, dict)
    return data


def hub_rows(url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        if cur.description is None:
            return []
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def hub_exec(url: str, sql: str, params: Any = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, params)


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def board_id(slug: str | None = None) -> str:
    with Board.open(slug) as b:
        value = b.db.value("SELECT value FROM meta WHERE key = 'board_id'")
    assert value, "the board has no board_id yet (it never synced)"
    return str(value)


def local_checkpoint(url: str, slug: str | None = None) -> int | None:
    from hermes_cli.kanban.core.hubconf import redact

    with Board.open(slug) as b:
        value = b.db.value("SELECT value FROM meta WHERE key = ?", ("sync.checkpoint " + redact(url),))
    return None if value is None else int(value)


def lease_row(url: str, bid: str) -> dict[str, Any] | None:
    if hub_rows(url, "SELECT to_regclass('hermes_hub.sync_leases') AS t")[0]["t"] is None:
        return None  # the sync has not created the hub's schema yet
    rows = hub_rows(url, "SELECT *, extract(epoch FROM clock_timestamp()) - refreshed_at AS age "
                         "FROM hermes_hub.sync_leases WHERE board_id = %s", (bid,))
    return rows[0] if rows else None


def hub_ack(url: str, bid: str) -> int:
    if hub_rows(url, "SELECT to_regclass('hermes_hub.acks') AS t")[0]["t"] is None:
        return 0
    rows = hub_rows(url, "SELECT last_event_id FROM hermes_hub.acks WHERE board_id = %s", (bid,))
    return int(rows[0]["last_event_id"]) if rows else 0


def local_state(slug: str | None = None) -> tuple[list[tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    with Board.open(slug) as b, b.db.read():
        events = [tuple(r[c] for c in EVENT_COLUMNS)
                  for r in b.db.rows(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id")]
        tasks = {r["id"]: tuple(r[c] for c in TASK_FIELDS) for r in b.db.rows(f"SELECT {TASK_COLUMNS} FROM tasks")}
    return events, tasks


def hub_state(url: str, bid: str) -> tuple[list[tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    events = [tuple(r[c] for c in EVENT_COLUMNS) for r in hub_rows(
        url, f"SELECT {', '.join(EVENT_COLUMNS)} FROM hermes_hub.events WHERE board_id = %s ORDER BY id", (bid,))]
    tasks = {r["id"]: tuple(r[c] for c in TASK_FIELDS) for r in hub_rows(
        url, f"SELECT {TASK_COLUMNS} FROM hermes_hub.tasks WHERE board_id = %s", (bid,))}
    return events, tasks


def assert_hub_equals_local(url: str, slug: str | None = None) -> tuple[int, int]:
    """Every event and every task of the local board is on the hub, identical, and nothing else. Returns
    (events, tasks) compared."""
    bid = board_id(slug)
    local_events, local_tasks = local_state(slug)
    remote_events, remote_tasks = hub_state(url, bid)
    ids = [e[0] for e in remote_events]
    assert len(ids) == len(set(ids)), "duplicate events on the hub"
    missing = sorted({e[0] for e in local_events} - set(ids))
    extra = sorted(set(ids) - {e[0] for e in local_events})
    lacking = [e for e in local_events if e[0] in missing[:10]]
    assert not missing and not extra, f"hub lacks events {lacking} / has extra {extra[:10]}"
    assert remote_events == local_events
    assert set(remote_tasks) == set(local_tasks)
    for tid, row in local_tasks.items():
        assert remote_tasks[tid] == row, f"task {tid} differs: local {row} hub {remote_tasks[tid]}"
    assert hub_ack(url, bid) == (local_events[-1][0] if local_events else 0)
    return len(local_events), len(local_tasks)
