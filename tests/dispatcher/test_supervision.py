"""Torture tests with real processes and signals: fencing a paused worker, pid reuse, a dispatcher SIGKILLed under
load and restarted, a paused child, --timeout. Each is bounded in time (wait_for, finish timeouts)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.core import procs
from hermes_cli.kanban.core.errors import BoardBusy
from hermes_cli.kanban.dispatch import lease as lease_api
from hermes_cli.kanban.dispatch.result import StopReason
from hermes_cli.kanban.dispatch.supervisor import Dispatcher
from hermes_cli.kanban.domain.config import load_settings

from .conftest import (
    HERMES,
    PY,
    Reaper,
    alive,
    configure,
    dispatch,
    fd_count,
    outcomes,
    pidfds,
    pycmd,
    runs_of,
    started_run,
    wait_for,
)

pytestmark = pytest.mark.slow

WORKER_A = r"""
import json, os, subprocess, sys
from hermes_cli.kanban import Board
task = sys.argv[1]
with Board.open() as b:
    claim = b.claim(task, worker="A", ttl=1.0)
    b.heartbeat(task, claim.run_id, ttl=1.0)      # fine while the run is current
print(json.dumps({"run_id": claim.run_id}), flush=True)
sys.stdin.readline()                               # the test SIGSTOPs us here, later resumes us and says go
env = dict(os.environ, HERMES_KANBAN_TASK=task, HERMES_KANBAN_RUN_ID=str(claim.run_id))
cli = [sys.executable, "-m", "hermes_cli.main", "kanban"]
hb = subprocess.run(cli + ["heartbeat"], env=env, capture_output=True, text=True)
done = subprocess.run(cli + ["complete", "--summary", "A was here"], env=env, capture_output=True, text=True)
print(json.dumps({"heartbeat": [hb.returncode, hb.stderr], "complete": [done.returncode, done.stderr]}), flush=True)
"""


def test_fencing_a_paused_worker_cannot_overwrite_its_successor(board: Board, reaper: Reaper) -> None:
    task, _ = board.create_task("contended")
    a = subprocess.Popen([PY, "-c", WORKER_A, task.id], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    reaper.own(a.pid)
    assert a.stdout is not None and a.stdin is not None
    run_a = json.loads(a.stdout.readline())["run_id"]
    a.send_signal(signal.SIGSTOP)
    lease_end = board.get_task(task.id).lease_expires_at
    assert lease_end is not None
    wait_for(lambda: time.time() > lease_end + 0.05, what="A's lease to run out")

    # B takes the task over (claiming an expired running task reclaims it) and completes it under its own token.
    b = subprocess.run([HERMES, "kanban", "claim", task.id, "--json"], capture_output=True, text=True, timeout=30)
    assert b.returncode == 0, b.stderr
    run_b = json.loads(b.stdout)["run_id"]
    c = subprocess.run([HERMES, "kanban", "complete", task.id, "--run-id", str(run_b), "--summary", "B did it"],
                       capture_output=True, text=True, timeout=30)
    assert c.returncode == 0, c.stderr
    final = board.get_task(task.id)

    a.send_signal(signal.SIGCONT)
    out, _ = a.communicate("go\n", timeout=30)
    result = json.loads(out.splitlines()[-1])
    assert result["heartbeat"] == [3, f"error: run {run_a} is not the current run of task {task.id} (status done); "
                                      "heartbeat refused, nothing changed\n"]
    assert result["complete"][0] == 3
    assert result["complete"][1].startswith(f"error: run {run_a} is not the current run of task {task.id}")
    # B's state, unchanged by A
    after = board.get_task(task.id)
    assert after == final and after.status == TaskStatus.DONE and after.summary == "B did it"
    assert [(r.id, r.outcome) for r in runs_of(board, task.id)] == [(run_a, "reclaimed"), (run_b, "completed")]


def test_pid_reuse_a_live_pid_with_another_start_time_is_dead(board: Board, reaper: Reaper) -> None:
    impostor = subprocess.Popen(["sleep", "30"])  # alive, but not the process the run recorded
    reaper.own(impostor.pid)
    real = subprocess.Popen(["sleep", "1"])  # the genuine worker of the second run (not our dispatcher's child)
    reaper.own(real.pid)
    try:
        _pid_reuse(board, impostor, real)
    finally:
        for p in (impostor, real):
            p.kill()
            p.wait()


def _pid_reuse(board: Board, impostor: subprocess.Popen[bytes], real: subprocess.Popen[bytes]) -> None:
    reused, _ = board.create_task("reused pid", command=pycmd("pass"))
    genuine, _ = board.create_task("genuine pid", command=pycmd("pass"))
    started = procs.create_time(impostor.pid)
    assert started is not None
    board.claim(reused.id, worker="old", ttl=60, pid=impostor.pid, pid_create_time=started - 3.0)
    board.claim(genuine.id, worker="old", ttl=60, pid=real.pid, pid_create_time=procs.create_time(real.pid))
    res = dispatch(board)
    assert res.reason == StopReason.IDLE, res.error
    first = runs_of(board, reused.id)[0]
    assert first.outcome == "crashed"
    assert first.summary == (f"worker pid {impostor.pid} is gone (no process with that pid and start time); "
                             "exit status unknown")
    assert outcomes(board, reused.id) == ["crashed", "completed"]  # retried by a new worker
    assert impostor.poll() is None  # never signalled: a reused pid belongs to someone else
    # the genuine one was adopted, supervised until it exited (status unknown to a non-parent), then retried
    assert res.counts["adopted"] == 1
    assert runs_of(board, genuine.id)[0].summary.startswith(f"worker pid {real.pid} exited while not supervised")
    assert outcomes(board, genuine.id) == ["crashed", "completed"]


JOURNALED = r"""
import os, subprocess, sys, time
task, run = os.environ["HERMES_KANBAN_TASK"], os.environ["HERMES_KANBAN_RUN_ID"]
def note(what):
    with open(sys.argv[1], "a") as f:
        f.write(f"{what} {task} {run} {os.getpid()} {time.time()}\n")
note("start")
time.sleep(float(sys.argv[2]))
subprocess.check_call([sys.executable, "-m", "hermes_cli.main", "kanban", "complete", "--summary", f"by run {run}"])
note("end")
"""


def test_dispatcher_sigkilled_under_load_then_restarted(board: Board, reaper: Reaper, tmp_path: Path) -> None:
    configure(board, max_spawn=5, worker_ttl="10s", lease_grace="2s")
    journal = tmp_path / "journal"
    d1 = reaper.hermes("kanban", "daemon", "--json")
    wait_for(lambda: lease_api.read_lease(board), what="the first dispatcher's lease")
    fds_idle = fd_count(d1.pid)
    tasks = [board.create_task(f"job {i}", command=pycmd(JOURNALED, str(journal), "4"), priority=10)[0]
             for i in range(4)]
    crasher, _ = board.create_task("crash loop", command=pycmd("raise SystemExit(2)"), max_retries=2)
    first_runs = [wait_for(lambda t=t: started_run(board, t.id), what=f"{t.title} to start") for t in tasks]
    # the fewest over half a second: the crash loop's attempts come and go (a pidfd lives from a spawn until its
    # exit is recorded, which a woken dispatcher now does after starting what is ready), a leak stays
    samples = []
    for _ in range(5):
        samples.append(fd_count(d1.pid))
        time.sleep(0.1)
    fds_busy = min(samples)
    # a handful of fds per running worker at most (one pidfd each; logs are closed after the spawn)
    assert fds_busy - fds_idle <= 2 * 5, (fds_idle, fds_busy)

    d1.popen.send_signal(signal.SIGKILL)
    assert d1.finish(timeout=10)[0] == -signal.SIGKILL
    killed_at: dict[int, float] = {}
    for run in first_runs[:2]:  # two workers die with it
        os.killpg(run.pid, signal.SIGKILL)
        killed_at[run.id] = time.time()
    survivors = first_runs[2:]
    assert all(alive(r.pid, r.pid_create_time) for r in survivors)

    wait_for(lambda: lease_api.read_lease(board).age() > 2.05, what="the dead dispatcher's lease to go stale")
    d2 = reaper.hermes("kanban", "dispatch", "--until-idle", "--json")
    code, out, err = d2.finish(timeout=60)
    assert code == 0, err
    assert out["reason"] == "idle" and out["took_over_from"]["pid"] == d1.pid
    assert out["adopted"] == 2, err

    for run in survivors:  # finished under their own tokens, never re-run
        rs = runs_of(board, run.task_id)
        assert [(r.id, r.outcome, r.summary) for r in rs] == [(run.id, "completed", f"by run {run.id}")]
    for run in first_runs[:2]:  # reclaimed by the pid check (not by waiting out their 10 s leases), then re-run
        rs = runs_of(board, run.task_id)
        assert [r.outcome for r in rs] == ["crashed", "completed"]
        assert rs[0].summary.startswith(f"worker pid {run.pid} ")
        assert rs[1].started_at > killed_at[run.id]
    # attempts capped across the restart: 3 = max_retries + 1, no spawn-crash loop
    # (a run whose dispatcher died between its claim and recording the pid is closed as crashed 5 s after its
    # claim, or, had its lease run out first, reclaimed: either way it is an attempt)
    c = board.get_task(crasher.id)
    assert c.status == TaskStatus.BLOCKED and c.attempts == 3, err
    assert len(outcomes(board, crasher.id)) == 3 and set(outcomes(board, crasher.id)) <= {"crashed", "reclaimed"}
    assert all(board.get_task(t.id).status == TaskStatus.DONE for t in tasks)

    # never two owners: per task, at most one worker process alive at any time (journal + our kill times) ...
    spans: dict[str, list[tuple[float, float]]] = {}
    starts: dict[str, float] = {}
    for line in journal.read_text().splitlines():
        what, task_id, run_id, _pid, t = line.split()
        if what == "start":
            starts[run_id] = float(t)
        else:
            spans.setdefault(task_id, []).append((starts.pop(run_id), float(t)))
    for run_id, t0 in starts.items():  # started, never ended: the ones we killed
        run = next(r for r in first_runs if str(r.id) == run_id)
        spans.setdefault(run.task_id, []).append((t0, killed_at[run.id]))
    for task_spans in spans.values():
        task_spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(task_spans, task_spans[1:], strict=False))
    # ... and per task, runs never overlap in the board either
    for t in [*tasks, crasher]:
        rs = runs_of(board, t.id)
        assert all(a.ended_at is not None and a.ended_at <= b.started_at for a, b in zip(rs, rs[1:], strict=False))


PAUSE_ON_FIRST = r"""
import os, time
if not os.path.exists("first"):
    open("first", "w").write(str(os.getpid()))
    time.sleep(60)
print("second attempt done")
"""


def test_a_paused_worker_loses_its_lease_is_stopped_and_the_task_retried(board: Board, reaper: Reaper) -> None:
    configure(board, worker_ttl="1500ms")
    task, _ = board.create_task("pausable", command=pycmd(PAUSE_ON_FIRST))
    d = reaper.hermes("kanban", "dispatch", "--until-idle", "--json")
    first = wait_for(lambda: started_run(board, task.id), what="the worker to start")
    marker = board.paths.workspaces_dir / task.id / "first"
    wait_for(lambda: marker.exists() and marker.read_text() == str(first.pid), what="the worker to get going")
    os.kill(first.pid, signal.SIGSTOP)
    code, out, err = d.finish(timeout=30)
    assert code == 0, err
    assert outcomes(board, task.id) == ["reclaimed", "completed"]
    assert out["reclaimed"] == 1
    assert f"stopping {task.id} run {first.id} pid {first.pid}: its lease expired (paused or hung)" in err
    assert not alive(first.pid, first.pid_create_time)  # stopped for good, never left paused


REPORT_AFTER = ("import subprocess, sys, time; time.sleep(float(sys.argv[1])); subprocess.check_call([sys.executable, "
                "'-m', 'hermes_cli.main', 'kanban', 'complete', '--summary', 'finished'])")


def test_timeout_leaves_the_board_consistent_and_resumable(board: Board, reaper: Reaper) -> None:
    configure(board, max_spawn=2)
    tasks = [board.create_task(f"job {i}", command=pycmd(REPORT_AFTER, "2.5"))[0] for i in range(4)]
    d1 = reaper.hermes("kanban", "daemon", "--timeout", "1s", "--json")
    code, out, err = d1.finish(timeout=30)
    assert code == 0, err
    assert out["reason"] == "timeout" and out["spawned"] == 2 and len(out["left_running"]) == 2
    assert lease_api.read_lease(board) is None  # released at once: the next dispatcher need not wait
    # consistent: every running task has exactly its open run, with a live recorded worker; the rest are ready
    running = board.list_tasks(status="running")
    assert sorted(t.id for t in running) == sorted(w["task_id"] for w in out["left_running"])
    for t in running:
        run = runs_of(board, t.id)[-1]
        assert run.id == t.current_run_id and run.ended_at is None and alive(run.pid, run.pid_create_time)
    assert len(board.list_tasks(status="ready")) == 2
    assert {r.id for r in board.open_runs()} == {t.current_run_id for t in running}

    d2 = reaper.hermes("kanban", "dispatch", "--until-idle", "--json")
    code, out2, err2 = d2.finish(timeout=60)
    assert code == 0, err2
    assert out2["adopted"] == 2 and out2["spawned"] == 2
    for t in tasks:  # partial progress kept: nothing ran twice
        assert board.get_task(t.id).status == TaskStatus.DONE
        assert outcomes(board, t.id) == ["completed"]


def test_a_run_on_another_host_is_left_to_its_lease(board: Board) -> None:
    # A run recorded on another host cannot be checked here: only its lease decides (it is not adopted, not
    # declared dead). Once the lease runs out, it is reclaimed and the task runs again.
    task, _ = board.create_task("remote", command=pycmd("pass"))
    claim = board.claim(task.id, worker="remote", ttl=1.0)
    assert claim is not None
    board.db.write(lambda: board.db.execute("UPDATE runs SET host = 'elsewhere', pid = 1, pid_create_time = 1.0 "
                                            "WHERE id = ?", (claim.run_id,)))
    res = dispatch(board)
    assert res.counts["adopted"] == 0 and res.counts["reclaimed"] == 1
    assert outcomes(board, task.id) == ["reclaimed", "completed"]
    assert runs_of(board, task.id)[1].started_at >= claim.lease_expires_at


def test_a_worker_whose_pid_was_never_recorded_is_found_by_its_token(board: Board, reaper: Reaper) -> None:
    # An earlier dispatcher (pid 999999, gone) claimed two tasks and died before recording their workers' pids:
    # one worker was started (found by its environment and adopted), the other never was (closed and retried).
    dead = f"dispatcher@{procs.HOST}:999999"
    started_task, _ = board.create_task("started", command=pycmd("pass"))
    lost_task, _ = board.create_task("never started", command=pycmd("pass"))
    started = board.claim(started_task.id, worker=dead, ttl=60)
    lost = board.claim(lost_task.id, worker=dead, ttl=60)
    assert started is not None and lost is not None
    board.db.write(lambda: board.db.execute("UPDATE runs SET started_at = started_at - 10"))  # past the grace
    env = {**os.environ, "HERMES_KANBAN_DB": str(board.paths.db), "HERMES_KANBAN_TASK": started_task.id,
           "HERMES_KANBAN_RUN_ID": str(started.run_id)}
    w = subprocess.Popen([PY, "-c", REPORT_AFTER, "1.5"], env=env, start_new_session=True)
    reaper.own(w.pid)
    try:
        res = dispatch(board)
    finally:
        w.wait(timeout=30)
    assert res.reason == StopReason.IDLE, res.error
    assert res.counts["adopted"] == 1
    run = runs_of(board, started_task.id)
    assert [(r.id, r.outcome, r.pid) for r in run] == [(started.run_id, "completed", w.pid)]
    assert outcomes(board, lost_task.id) == ["crashed", "completed"]
    assert runs_of(board, lost_task.id)[0].summary.startswith("its dispatcher stopped before the worker was started")


HOLD_WRITE_LOCK = r"""
import sys, apsw
db = apsw.Connection(sys.argv[1])
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


def test_a_busy_board_never_leaks_the_pidfd_of_a_run_it_could_not_adopt(
    board: Board, reaper: Reaper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adopting a live run extends its lease first. While another process holds the write lock that raises BoardBusy
    (the loop tries again next tick): the pidfd opened for the run must be closed, not leaked on every tick."""
    monkeypatch.setenv("HERMES_KANBAN_BUSY_TIMEOUT_MS", "1")  # give up on the held lock in milliseconds
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reaper.own(sleeper.pid)
    try:
        task, _ = board.create_task("adopt me")
        claim = board.claim(task.id, worker="pull", pid=sleeper.pid, pid_create_time=procs.create_time(sleeper.pid))
        with Board.open() as b:  # opened after the environment change, unlike the fixture's board
            d = Dispatcher(b, load_settings(b.paths))
            holder = subprocess.Popen([PY, "-c", HOLD_WRITE_LOCK, str(b.paths.db)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
            reaper.own(holder.pid)
            try:
                assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
                before = pidfds()
                for _ in range(3):
                    with pytest.raises(BoardBusy):
                        d._scan_runs()
                assert (pidfds(), d.workers) == (before, {})
            finally:
                holder.communicate("go\n", timeout=30)
            d._scan_runs()  # the lock is gone: adopted now, holding exactly one pidfd for it
            assert list(d.workers) == [claim.run_id] and pidfds() == before + 1
            d._unsupervise(d.workers[claim.run_id])
            assert pidfds() == before
    finally:
        sleeper.kill()
        sleeper.wait()
