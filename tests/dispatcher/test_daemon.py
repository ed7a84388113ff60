"""The dispatcher as a daemon (`hermes kanban daemon` in its own process): woken by the doorbell, by the fallback
poll when the doorbell is off, and stopped by signals (graceful, then immediate)."""

from __future__ import annotations

import signal

import pytest

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.dispatch import lease as lease_api

from .conftest import Reaper, alive, configure, started_run, wait_for, worker

pytestmark = pytest.mark.slow


def _lease_of(board: Board, pid: int) -> bool:
    lease = lease_api.read_lease(board)
    return lease is not None and lease.pid == pid


@pytest.mark.parametrize(("doorbell", "poll"), [(True, "1h"), (False, "200ms")], ids=["doorbell", "fallback-poll"])
def test_a_task_created_while_idle_is_dispatched(board: Board, reaper: Reaper, doorbell: bool, poll: str) -> None:
    # With the doorbell the poll interval is an hour: only a ring can wake the dispatcher in time. Without it,
    # the fallback poll alone must find the task (a lost ring costs latency, never the task).
    configure(board, poll_interval=poll, doorbell=doorbell)
    d = reaper.hermes("kanban", "daemon", "--json")
    wait_for(lambda: _lease_of(board, d.pid), what="the dispatcher's lease")
    # ready by creation
    task, _ = board.create_task("late", command=worker("work", "0.05"))
    wait_for(lambda: board.get_task(task.id).status == TaskStatus.DONE, what="the created task to be done")
    # ready because its parent was completed (by a pull worker: this process)
    parent, _ = board.create_task("manual parent")
    child, _ = board.create_task("child", command=worker("work", "0.05"), parents=[parent.id])
    claim = board.claim(parent.id, worker="me")
    assert claim is not None
    board.complete(parent.id, claim.run_id)
    wait_for(lambda: board.get_task(child.id).status == TaskStatus.DONE, what="the promoted child to be done")
    # ready because it was unblocked (held back by an unfinished parent until it is blocked, so it never runs early)
    gate, _ = board.create_task("gate")
    held, _ = board.create_task("held", command=worker("work", "0.05"), parents=[gate.id])
    board.block(held.id, reason="wait for it")
    board.complete(gate.id)
    assert board.get_task(held.id).status == TaskStatus.BLOCKED
    board.unblock(held.id)
    wait_for(lambda: board.get_task(held.id).status == TaskStatus.DONE, what="the unblocked task to be done")
    d.popen.send_signal(signal.SIGTERM)
    code, out, err = d.finish()
    assert code == 0, err
    assert out["reason"] == "signal" and out["spawned"] == 3 and out["completed"] == 3
    assert lease_api.read_lease(board) is None  # released


def test_first_signal_waits_for_workers_second_leaves_them_running(board: Board, reaper: Reaper) -> None:
    slow, _ = board.create_task("slow", command=worker("work", "1.5"))
    d = reaper.hermes("kanban", "daemon", "--json")
    wait_for(lambda: started_run(board, slow.id), what="the worker to start")
    d.popen.send_signal(signal.SIGTERM)
    code, out, err = d.finish()
    assert code == 0, err
    assert "SIGTERM: stopping gracefully, waiting for 1 worker(s)" in err
    assert out["reason"] == "signal" and out["completed"] == 1 and out["left_running"] == []
    assert board.get_task(slow.id).status == TaskStatus.DONE

    stuck, _ = board.create_task("stuck", command=worker("hang"))
    d = reaper.hermes("kanban", "daemon", "--json")
    run = wait_for(lambda: started_run(board, stuck.id), what="the stuck worker to start")
    d.popen.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping gracefully" in d.stderr(), what="the graceful stop to begin")
    d.popen.send_signal(signal.SIGINT)
    code, out, err = d.finish()
    assert code == 0, err
    assert [w["task_id"] for w in out["left_running"]] == [stuck.id]
    assert f"left running: {stuck.id} run {run.id} pid {run.pid}" in err
    # never orphaned silently: still running, still recorded, lease released so the next dispatcher adopts it
    assert alive(run.pid, run.pid_create_time)
    t = board.get_task(stuck.id)
    assert t.status == TaskStatus.RUNNING and t.current_run_id == run.id
    assert lease_api.read_lease(board) is None
