"""One dispatcher per board: two started at once (exactly one dispatches), and --break-lock, which frees a dead
holder's lease but never a live, refreshing one."""

from __future__ import annotations

import signal
import subprocess

import pytest

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.core import procs
from hermes_cli.kanban.dispatch import lease as lease_api

from .conftest import HERMES, Reaper, configure, outcomes, pycmd, runs_of, started_run, wait_for, worker

pytestmark = pytest.mark.slow


def test_two_dispatchers_started_at_once_exactly_one_dispatches(board: Board, reaper: Reaper) -> None:
    tasks = [board.create_task(f"t{i}", command=worker("work", "1"))[0] for i in range(3)]
    a = reaper.hermes("kanban", "dispatch", "--until-idle", "--json")
    b = reaper.hermes("kanban", "dispatch", "--until-idle", "--json")
    results = {d.pid: d.finish(timeout=60) for d in (a, b)}
    assert [code for code, _, _ in results.values()] == [0, 0]
    skipped = [(pid, out) for pid, (_, out, _) in results.items() if out["skipped"]]
    ran = [(pid, out) for pid, (_, out, _) in results.items() if not out["skipped"]]
    assert len(skipped) == 1 and len(ran) == 1
    (_, loser), (winner_pid, winner) = skipped[0], ran[0]
    assert loser["message"].startswith(f"skipped: lease held by {procs.HOST}:{winner_pid} (epoch 1, refreshed ")
    assert loser["spawned"] == 0 and winner["spawned"] == 3
    for t in tasks:
        assert outcomes(board, t.id) == ["completed"]


def test_a_second_dispatcher_prints_skipped_and_exits_0(board: Board, reaper: Reaper) -> None:
    d = reaper.hermes("kanban", "daemon")
    wait_for(lambda: lease_api.read_lease(board), what="the first dispatcher's lease")
    second = subprocess.run([HERMES, "kanban", "dispatch", "--once"], capture_output=True, text=True, timeout=30)
    assert second.returncode == 0
    assert second.stdout.startswith(f"skipped: lease held by {procs.HOST}:{d.pid} (epoch 1, refreshed ")
    d.popen.send_signal(signal.SIGTERM)
    assert d.finish()[0] == 0


def test_break_lock_frees_a_dead_holders_lease_but_never_a_live_one(board: Board, reaper: Reaper) -> None:
    configure(board, lease_grace="3s", worker_ttl="3s")  # the lease is refreshed every 1 s
    task, _ = board.create_task("after the break", command=worker("work", "0.05"))
    board.block(task.id, reason="not yet")
    holder = reaper.hermes("kanban", "daemon", "--json")
    live = wait_for(lambda: lease_api.read_lease(board), what="the holder's lease")

    refused = subprocess.run([HERMES, "kanban", "dispatch", "--once", "--break-lock", "--max-age", "1.5s"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 3, refused.stderr
    assert refused.stderr.startswith(f"error: dispatcher lease held by {procs.HOST}:{holder.pid} (epoch 1, ")
    assert refused.stderr.rstrip().endswith("not breaking a live lease")
    too_short = subprocess.run([HERMES, "kanban", "dispatch", "--once", "--break-lock", "--max-age", "500ms"],
                               capture_output=True, text=True, timeout=30)
    assert too_short.returncode == 1
    assert too_short.stderr == ("error: --max-age 500ms is shorter than the lease refresh interval (1s): a live "
                                "dispatcher would look dead\n")
    assert holder.popen.poll() is None
    assert lease_api.read_lease(board).epoch == live.epoch  # type: ignore[union-attr]

    holder.popen.send_signal(signal.SIGKILL)
    holder.finish()
    board.unblock(task.id)
    # --break-lock frees the dead holder's lease once it is older than --max-age, and dispatches (a plain dispatcher
    # on this host would take it over at once: tests/dispatcher/test_takeover_and_stop.py)
    wait_for(lambda: lease_api.read_lease(board).age() > 1.5, what="the dead holder's lease to age")
    broke = subprocess.run([HERMES, "kanban", "dispatch", "--until-idle", "--break-lock", "--max-age", "1.5s",
                            "--json"], capture_output=True, text=True, timeout=30)
    assert broke.returncode == 0, broke.stderr
    assert f'"broke_lock": {{"holder": "{procs.HOST}:{holder.pid}"' in broke.stdout
    assert '"skipped": false' in broke.stdout
    assert board.get_task(task.id).status == TaskStatus.DONE
    assert [e.kind for e in board.events(kinds=["dispatcher_lock_broken"])] == ["dispatcher_lock_broken"]


REPORT_AFTER = ("import subprocess, sys, time; time.sleep(float(sys.argv[1])); subprocess.check_call([sys.executable, "
                "'-m', 'hermes_cli.main', 'kanban', 'complete', '--summary', 'finished'])")


def test_a_paused_dispatcher_loses_its_lease_and_steps_down(board: Board, reaper: Reaper) -> None:
    # A is SIGSTOPped past the grace period; B takes the board over and adopts A's live worker. When A resumes it
    # finds its lease gone: it starts nothing more, leaves the worker to B and exits 3.
    task, _ = board.create_task("long", command=pycmd(REPORT_AFTER, "3"))
    a = reaper.hermes("kanban", "daemon", "--json")
    run = wait_for(lambda: started_run(board, task.id), what="A's worker to start")
    a.popen.send_signal(signal.SIGSTOP)
    wait_for(lambda: lease_api.read_lease(board).age() > 2.05, what="A's lease to go stale")
    b = reaper.hermes("kanban", "dispatch", "--until-idle", "--json")
    wait_for(lambda: "adopted" in b.stderr(), what="B to adopt A's worker")
    later, _ = board.create_task("after the takeover", command=worker("work", "0.05"))
    a.popen.send_signal(signal.SIGCONT)
    code_a, out_a, err_a = a.finish(timeout=30)
    assert code_a == 3, err_a
    assert out_a["reason"] == "lease_lost"
    assert f"dispatcher lease (epoch 1) was lost; it is now held by {procs.HOST}:{b.pid} (epoch 2" in err_a
    code_b, out_b, err_b = b.finish(timeout=30)
    assert code_b == 0, err_b
    assert out_b["adopted"] == 1 and out_b["spawned"] == 1
    assert [(r.id, r.outcome) for r in runs_of(board, task.id)] == [(run.id, "completed")]
    assert [r.worker for r in runs_of(board, later.id)] == [f"dispatcher@{procs.HOST}:{b.pid}"]
