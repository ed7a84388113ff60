"""`hermes kanban complete ID --run-id R --next`: the completion and the next claim in one transaction, printed as
{"completed": <what complete prints>, "next": <what claim prints> | null}."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from hermes_cli.kanban import Board

from ..store.conftest import lock_holder  # noqa: F401,F811  (the fixture: a process holding the write lock)
from .conftest import Cli, Result


def _claim(cli: Cli) -> dict[str, Any]:
    r = cli("claim", "--json")
    assert r.code == 0, r.err
    return r.json()  # type: ignore[no-any-return]


def test_next_prints_the_completion_and_a_proper_claim(cli: Cli, board: Board) -> None:
    a, _ = board.create_task("a", priority=5)
    b, _ = board.create_task("b")
    first = _claim(cli)
    assert first["task_id"] == a.id

    r = cli("complete", a.id, "--run-id", str(first["run_id"]), "--next", "--worker", "w2", "--ttl", "5m", "--json")

    assert r.code == 0 and r.err == ""
    out = r.json()
    assert out["completed"]["id"] == a.id and out["completed"]["status"] == "done"
    assert out["completed"]["spooled"] is False
    nxt = out["next"]
    assert set(nxt) == set(first)  # the same fields as `claim --json`
    assert nxt["task_id"] == b.id and nxt["attempt"] == 1
    task = board.get_task(b.id)
    assert task.status == "running" and task.current_run_id == nxt["run_id"]
    (run,) = board.detail(b.id).runs
    assert run.worker == "w2" and run.is_open
    assert [(e.kind, e.task_id) for e in board.events(0)][-2:] == [("completed", a.id), ("claimed", b.id)]
    # the printed run id is the fencing token of the new claim
    assert cli("complete", b.id, "--run-id", str(nxt["run_id"]), "--json").code == 0


def test_next_with_nothing_ready_completes_and_prints_null(cli: Cli, board: Board) -> None:
    a, _ = board.create_task("only")
    c = _claim(cli)
    r = cli("complete", a.id, "--run-id", str(c["run_id"]), "--next", "--json")
    assert r.code == 0 and r.json()["next"] is None and r.json()["completed"]["status"] == "done"
    human = cli("complete", a.id, "--run-id", str(c["run_id"]), "--next")  # a repeat: a no-op, then nothing ready
    assert human.code == 0 and human.out == f"{a.id} done\nnothing ready to claim\n"


def test_stale_run_exits_3_completes_nothing_and_claims_nothing(
    cli: Cli, board: Board, home_dump: Callable[[], dict[str, Any]]
) -> None:
    a, _ = board.create_task("a")
    board.create_task("b")
    r0 = cli("claim", a.id, "--ttl", "0.01s", "--json")
    assert r0.code == 0, r0.err
    c = r0.json()
    time.sleep(0.05)
    assert board.claim(a.id, worker="took over") is not None  # the lease expired: the worker's run is stale now
    before = home_dump()
    r = cli("complete", a.id, "--run-id", str(c["run_id"]), "--next", "--json")
    assert r.code == 3
    assert r.json()["error"]["code"] == "stale_run"
    assert r.error_line.startswith(f"error: run {c['run_id']} is not the current run of task {a.id}")
    assert home_dump() == before
    assert board.counts()["running"] == 1 and board.counts()["ready"] == 1


def test_usage_errors(cli: Cli, board: Board, home_dump: Callable[[], dict[str, Any]]) -> None:
    a, _ = board.create_task("a")
    c = _claim(cli)
    before = home_dump()
    cases: list[tuple[list[str], int]] = [
        ([a.id, "--next"], 2),  # a person has no run to complete: --next is for workers
        ([a.id, "--run-id", str(c["run_id"]), "--next", "--force"], 2),
        ([a.id, "--run-id", str(c["run_id"]), "--ttl", "5m"], 2),  # --ttl without --next
        ([a.id, "--run-id", str(c["run_id"]), "--next", "--ttl", "soon"], 1),
    ]
    for args, code in cases:
        r: Result = cli("complete", *args)
        assert r.code == code, (args, r)
        assert r.error_line.startswith("error: ")
    assert home_dump() == before


@pytest.mark.sqlite_only  # SQLite's write lock; tests/pg spools on an unreachable server
def test_a_locked_board_spools_the_completion_and_claims_nothing(board: Board, lock_holder: Any) -> None:  # noqa: F811
    a, _ = board.create_task("a")
    board.create_task("b")
    c = board.claim(a.id, worker="w")
    assert c is not None
    holder = lock_holder(board.paths.db)
    env = {**os.environ, "HERMES_KANBAN_BUSY_TIMEOUT_MS": "20"}
    p = subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", "complete", a.id, "--run-id",
                        str(c.run_id), "--next", "--json"], capture_output=True, text=True, env=env, timeout=120)
    holder.release()
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["next"] is None and out["completed"]["spooled"] is True
    assert p.stderr.startswith("warning: ") and "was spooled to" in p.stderr
    assert board.counts()["running"] == 1 and board.counts()["ready"] == 1  # nothing claimed, nothing completed yet
