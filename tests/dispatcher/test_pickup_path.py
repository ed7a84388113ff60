"""The path from a task becoming ready to its worker's exec (issue 13: pickup p99 <= 50 ms; docs/dispatcher.md,
Pickup latency). What these tests hold is the shape of that path, not its speed (bench/pg_pickup.py and
bench/dispatch_latency.py measure it): a daemon woken by the bell starts the ready task before its chores, and
nothing is read from the board between the claim's commit and the worker's exec."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.dispatch import lease as lease_api
from hermes_cli.kanban.dispatch import spawn

from .conftest import Reaper, configure, dispatch, pycmd, started_run, wait_for


@pytest.mark.slow
def test_a_rung_daemon_starts_the_ready_task_before_recording_a_pending_exit(board: Board, reaper: Reaper,
                                                                             tmp_path: Path) -> None:
    # The daemon is stopped (SIGSTOP) while, at once, a task becomes ready (the bell rings) and its running worker
    # exits: when it goes on, both wake it in the same poll(). The ready task must be claimed before the exit is
    # recorded (a write of its own: reaping is a chore that can wait a few milliseconds, a ready task should not).
    # SQLite only: on PostgreSQL the bell is a thread that reads the notification after SIGCONT, so which of the
    # two the poll() sees first is a race there.
    configure(board, poll_interval="1h", doorbell=True, worker_ttl="60s", lease_grace="30s",
              backup_interval="off")
    go = tmp_path / "go"
    first, _ = board.create_task("first", command=pycmd(
        "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.01)", str(go)))
    d = reaper.hermes("kanban", "daemon", "--json")
    run = wait_for(lambda: started_run(board, first.id), what="the first worker to start")
    wait_for(lambda: lease_api.read_lease(board) is not None, what="the dispatcher's lease")
    # Let the daemon settle into its wait (it was woken by its own `spawned` write), so it is stopped holding no
    # write lock (the heartbeat refreshes are 20 s apart at this worker_ttl).
    wait_for(lambda: psutil.Process(d.pid).status() == psutil.STATUS_SLEEPING and not d.popen.poll(),
             what="the daemon to wait")
    d.popen.send_signal(signal.SIGSTOP)
    try:
        second, _ = board.create_task("second", command="true")
        go.touch()
        wait_for(lambda: psutil.Process(run.pid).status() == psutil.STATUS_ZOMBIE, what="the first worker's exit")
    finally:
        d.popen.send_signal(signal.SIGCONT)
    wait_for(lambda: board.get_task(second.id).status == TaskStatus.DONE
             and board.get_task(first.id).status == TaskStatus.DONE, what="both tasks to be done")
    d.popen.send_signal(signal.SIGTERM)
    code, _, err = d.finish()
    assert code == 0, err
    claimed = [e.id for e in board.events(kinds=["claimed"]) if e.task_id == second.id]
    ended = [e.id for e in board.events(task_id=first.id) if e.kind == "completed"]
    assert claimed and ended, (claimed, ended)
    assert claimed[0] < ended[0], "the exit of the first worker was recorded before the ready task was claimed"


def test_nothing_is_read_between_the_claim_and_the_workers_exec(engine: str, board: Board, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Every round trip after the claim's commit delays the worker's exec (on PostgreSQL, a read transaction of its
    # own is three: BEGIN, the SELECTs, COMMIT). What the start needs (the board's default workdir, the task's model
    # override) is read inside the claim's transaction.
    configure(board, backup_interval="off")
    seen = tmp_path / "seen"
    task, _ = board.create_task("one", command=pycmd(
        "import os, sys; open(sys.argv[1], 'w').write(os.environ['HERMES_KANBAN_MODEL'] + ' ' + os.getcwd())",
        str(seen)))
    board.set_model(task.id, "m-1", provider="p-1")
    trail: list[str] = []
    db: Any = board.db
    for name in ("rows", "row", "first", "value", "execute", "read"):
        real = getattr(db, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            trail.append(_name)
            return _real(*args, **kw)

        monkeypatch.setattr(db, name, spy)
    real_write = db.write

    def write(fn: Any, **kw: Any) -> Any:
        nested = db.in_transaction
        result = real_write(fn, **kw)
        if not nested:
            trail.append("commit")
        return result

    monkeypatch.setattr(db, "write", write)
    real_popen = spawn.subprocess.Popen

    def popen(*args: Any, **kw: Any) -> Any:
        trail.append("exec")
        return real_popen(*args, **kw)

    monkeypatch.setattr(spawn.subprocess, "Popen", popen)
    res = dispatch(board, once=True)
    assert res.error is None and res.counts["spawned"] == 1, res.as_dict()
    at = trail.index("exec")
    assert trail[at - 1] == "commit", f"read between the claim's commit and the exec: {trail[:at + 1]}"
    # ... and what was read in the claim's transaction still reaches the worker
    assert seen.read_text(encoding="utf-8") == f"m-1 {spawn.workspace_for(board.paths, task.id)}"
