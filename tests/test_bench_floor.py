"""bench/floor.py measures "the product's write set without its domain layer": that claim only holds while its store
loops write exactly the rows Board.claim/complete/complete_next write. Compared here, row by row, on one board."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import floor  # noqa: E402


def _clean_env(monkeypatch) -> None:
    """Floor sets HERMES_HOME and HERMES_KANBAN_SYNCHRONOUS in os.environ (a bench script owns its process): set
    through monkeypatch first, so that both are put back after the test."""
    for key in [k for k in os.environ if k.startswith("HERMES_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HERMES_HOME", "")
    monkeypatch.setenv("HERMES_KANBAN_SYNCHRONOUS", "")


@pytest.fixture
def bench_floor(tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    f = floor.Floor(tmp_path, 40)
    yield f
    f.close()


def _q(f: floor.Floor, sql: str, params: tuple = ()) -> list[tuple]:
    return [tuple(r) for r in f.db.conn.execute(sql, params)]


def _footprint(f: floor.Floor, task_ids: list[str]) -> list[tuple]:
    """What a task's claim and completion left behind, without ids and times: status, attempts, the runs and the
    events with their payloads' keys and value types."""
    out = []
    for tid in task_ids:
        task = _q(f, "SELECT status, attempts, current_run_id, lease_expires_at, summary FROM tasks WHERE id = ?",
                  (tid,))
        runs = _q(f, "SELECT worker, host, outcome, summary, ended_at IS NOT NULL FROM runs WHERE task_id = ?", (tid,))
        events = [(kind, run_id is not None, sorted((k, type(v).__name__) for k, v in json.loads(payload).items()))
                  for kind, run_id, payload in _q(
                      f, "SELECT kind, run_id, payload FROM events WHERE task_id = ? ORDER BY id", (tid,))]
        out.append((task, runs, events))
    return out


def _done_since(f: floor.Floor, before: int) -> list[str]:
    return [r[0] for r in _q(f, "SELECT task_id FROM runs WHERE id > ? ORDER BY id", (before,))]


def _last_run(f: floor.Floor) -> int:
    return _q(f, "SELECT coalesce(max(id), 0) FROM runs")[0][0]


@pytest.mark.parametrize("loop", ["plain", "next"])
def test_store_loops_write_what_the_board_writes(bench_floor, loop):
    f = bench_floor
    mark = _last_run(f)
    getattr(f, f"board_{loop}")(3)
    by_board = _done_since(f, mark)
    mark = _last_run(f)
    getattr(f, f"store_{loop}")(3)
    by_store = _done_since(f, mark)
    assert len(by_board) == len(by_store) >= 3
    board_rows, store_rows = _footprint(f, by_board), _footprint(f, by_store)
    assert board_rows == store_rows
    assert board_rows[0][0][0][0] == "done"
    assert [e[0] for e in board_rows[0][2]] == ["created", "claimed", "completed"]


def test_lean_board_drops_only_what_it_says(tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    f = floor.Floor(tmp_path, 20, lean=True)
    try:
        indexes = {r[0] for r in _q(f, "SELECT name FROM sqlite_schema WHERE type = 'index'")}
        assert "runs_open" not in indexes and "events_task" not in indexes and "runs_task" in indexes
        assert "AUTOINCREMENT" not in _q(f, "SELECT sql FROM sqlite_schema WHERE name = 'runs'")[0][0]
        f.store_plain(3)
        f.store_next(3)
        # 3 plain; next: 3 completions claiming the next, then the last claim completed
        assert _q(f, "SELECT count(*) FROM tasks WHERE status = 'done'") == [(7,)]
    finally:
        f.close()


def test_the_script_prints_every_loop(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "floor.py"), "--tasks", "20", "--rounds", "1",
                          "--json", "--dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert list(res["loops"]) == list(floor.LOOPS)
    assert all(r["commits_per_s"] > 0 for r in res["loops"].values())
    assert not list(tmp_path.iterdir()), "the script leaves its work directory behind"
