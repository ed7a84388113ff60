"""The per-run watcher (dispatch/watch.py): a worker started by a one-pass `hermes kanban dispatch` is still supervised
after the pass returned and while no dispatcher runs: its exit status is recorded (exit 0 = completed), its
max_runtime enforced and its lease extended. Real processes: the CLI, the watcher, the workers, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.dispatch import spawn

from .conftest import HERMES, Reaper, configure, pycmd, runs_of, wait_for

#: a worker that runs until the file named by its argument exists, then exits with the code in argv[2]
WAIT_THEN_EXIT = ("import os,sys,time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.02)\n"
                  "sys.exit(int(sys.argv[2]))")


def hermes(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERMES, "kanban", *args], capture_output=True, text=True, timeout=timeout)


def one_pass(reaper: Reaper) -> dict[str, Any]:
    """`hermes kanban dispatch --json`: returns its summary; the workers (and watchers) it started are the reaper's."""
    p = hermes("dispatch", "--json")
    assert p.returncode == 0, p.stderr
    out: dict[str, Any] = json.loads(p.stdout)
    assert out["reason"] == "pass", out
    for s in out["started"]:
        reaper.own(s["pid"])
        if s.get("watcher"):
            reaper.own(s["watcher"])
    return out


def ended_run(board: Board, task_id: str) -> Any:
    runs = runs_of(board, task_id)
    return runs[-1] if runs and not runs[-1].is_open else None


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_exit_0_without_a_report_is_completed_after_the_pass_returned(board: Board, reaper: Reaper,
                                                                     tmp_path: Path) -> None:
    configure(board, backup_interval="off")
    release = tmp_path / "release"
    task, _ = board.create_task("exits 0", command=pycmd(WAIT_THEN_EXIT, str(release), "0"), max_retries=0)
    out = one_pass(reaper)
    assert out["spawned"] == 1
    assert board.get_task(task.id).status == TaskStatus.RUNNING  # the pass returned while its worker runs
    release.write_text("go")
    run = wait_for(lambda: ended_run(board, task.id), what="the run to be recorded with no dispatcher running")
    assert (run.outcome, run.exit_code, run.summary) == ("completed", 0, "exited 0")
    assert board.get_task(task.id).status == TaskStatus.DONE
    assert run.pid == out["started"][0]["pid"]  # the run names the worker, not its watcher
    wait_for(lambda: gone(out["started"][0]["watcher"]), what="the watcher to exit")
    assert not spawn.watcher_lock(board.paths, run.id).exists()


def test_exit_3_is_crashed_with_its_exit_code(board: Board, reaper: Reaper, tmp_path: Path) -> None:
    configure(board, backup_interval="off")
    release = tmp_path / "release"
    task, _ = board.create_task("exits 3", command=pycmd(WAIT_THEN_EXIT, str(release), "3"), max_retries=0)
    one_pass(reaper)
    release.write_text("go")
    run = wait_for(lambda: ended_run(board, task.id), what="the run to be recorded with no dispatcher running")
    assert (run.outcome, run.exit_code, run.summary) == ("crashed", 3, "exited 3")
    assert board.get_task(task.id).status == TaskStatus.BLOCKED  # max_retries 0: gave up


def test_max_runtime_is_enforced_by_the_watcher(board: Board, reaper: Reaper) -> None:
    configure(board, backup_interval="off")
    task, _ = board.create_task("hangs", command=pycmd("import time; time.sleep(60)"), max_runtime="1s",
                                max_retries=0)
    out = one_pass(reaper)
    pid = out["started"][0]["pid"]
    run = wait_for(lambda: ended_run(board, task.id), what="the watcher to kill the worker at its max runtime")
    assert run.outcome == "timed_out"
    assert run.summary.startswith("killed after max runtime 1s"), run.summary
    assert gone(pid)
    assert board.get_task(task.id).status == TaskStatus.BLOCKED


def test_the_watcher_extends_the_lease_while_no_dispatcher_runs(board: Board, reaper: Reaper,
                                                                 tmp_path: Path) -> None:
    configure(board, backup_interval="off", worker_ttl="3s")  # beats every 1s: a loaded host may delay one
    release = tmp_path / "release"
    task, _ = board.create_task("long", command=pycmd(WAIT_THEN_EXIT, str(release), "0"))
    one_pass(reaper)
    first = runs_of(board, task.id)[-1]
    time.sleep(7.5)  # two and a half leases with no dispatcher running
    now = board.db.clock()
    run = runs_of(board, task.id)[-1]
    assert run.is_open and run.id == first.id
    assert run.lease_expires_at > now, f"lease expired {now - run.lease_expires_at:.1f}s ago"
    assert run.lease_expires_at > first.lease_expires_at + 3.0  # extended past the claim's lease
    # A pass now finds nothing to reclaim, and leaves the run to its watcher.
    again = one_pass(reaper)
    assert (again["reclaimed"], again["crashed"], again["adopted"]) == (0, 0, 1)
    release.write_text("go")
    done = wait_for(lambda: ended_run(board, task.id), what="the run to be recorded")
    assert (done.outcome, done.exit_code) == ("completed", 0)


def test_a_daemon_adopting_a_watched_run_leaves_its_end_to_the_watcher(board: Board, reaper: Reaper,
                                                                       tmp_path: Path) -> None:
    configure(board, backup_interval="off")
    release = tmp_path / "release"
    task, _ = board.create_task("watched", command=pycmd(WAIT_THEN_EXIT, str(release), "0"), max_retries=0)
    one_pass(reaper)
    d = reaper.hermes("kanban", "dispatch", "--until-idle", "--json", "--timeout", "30s")
    wait_for(lambda: "adopted" in d.stderr(), what="the dispatcher to adopt the watched run")
    release.write_text("go")
    code, out, err = d.finish(timeout=40)
    assert code == 0, err
    assert out["reason"] == "idle", (out, err)
    assert (out["adopted"], out["completed"], out["crashed"]) == (1, 0, 0), err
    run = runs_of(board, task.id)[-1]
    assert (run.outcome, run.exit_code, run.summary) == ("completed", 0, "exited 0")
    ends = [e for e in board.events(task_id=task.id) if e.kind in ("completed", "crashed", "timed_out", "reclaimed")]
    assert len(ends) == 1, ends  # recorded once, by the watcher


def test_a_report_by_the_worker_wins_over_its_exit_0(board: Board, reaper: Reaper) -> None:
    configure(board, backup_interval="off")
    code = ("import os,subprocess,sys\n"
            f"subprocess.run([{HERMES!r}, 'kanban', 'complete', '--summary', 'written by the worker'], check=True)")
    task, _ = board.create_task("reports", command=pycmd(code))
    one_pass(reaper)
    run = wait_for(lambda: ended_run(board, task.id), what="the worker's report")
    assert (run.outcome, run.summary) == ("completed", "written by the worker")
    out = one_pass(reaper)
    assert out["crashed"] == 0
    assert runs_of(board, task.id)[-1].summary == "written by the worker"


def test_sigkill_of_the_watcher_falls_back_to_adoption(board: Board, reaper: Reaper, tmp_path: Path) -> None:
    configure(board, backup_interval="off")
    release = tmp_path / "release"
    task, _ = board.create_task("orphaned", command=pycmd(WAIT_THEN_EXIT, str(release), "0"), max_retries=0)
    out = one_pass(reaper)
    worker, watcher = out["started"][0]["pid"], out["started"][0]["watcher"]
    os.kill(watcher, signal.SIGKILL)
    wait_for(lambda: gone(watcher), what="the watcher to die")
    assert psutil.pid_exists(worker) and not gone(worker)  # the worker runs on, in its own session
    # A pass adopts the worker itself now (its watcher is gone)...
    again = one_pass(reaper)
    assert again["adopted"] == 1 and again["crashed"] == 0
    release.write_text("go")
    wait_for(lambda: gone(worker), what="the worker to exit")
    # ... and, as before watchers existed, judges it once it is gone: crashed, exit status unknown.
    last = one_pass(reaper)
    assert last["crashed"] == 1
    run = runs_of(board, task.id)[-1]
    assert run.outcome == "crashed" and "exit status unknown" in (run.summary or ""), run.summary
    assert not spawn.watcher_lock(board.paths, run.id).exists()


def test_a_watched_worker_gets_the_worker_contract_and_its_watcher_does_not(board: Board, reaper: Reaper,
                                                                            tmp_path: Path) -> None:
    configure(board, backup_interval="off")
    release, seen = tmp_path / "release", tmp_path / "seen.json"
    code = ("import json,os,sys,time\n"
            "json.dump({'env': dict(os.environ), 'sid': os.getsid(0), 'pgid': os.getpgid(0), 'pid': os.getpid(),"
            " 'cwd': os.getcwd()}, open(sys.argv[2], 'w'))\n"
            "print('to the log', flush=True)\n"
            "while not os.path.exists(sys.argv[1]): time.sleep(0.02)")
    task, _ = board.create_task("contract", command=pycmd(code, str(release), str(seen)))
    out = one_pass(reaper)
    s = out["started"][0]
    wait_for(lambda: seen.exists() and seen.read_text(), what="the worker to write what it sees")
    got = json.loads(seen.read_text())
    assert got["pid"] == s["pid"] and got["sid"] == got["pid"] == got["pgid"]  # its own session and group
    assert got["cwd"] == s["workspace"]
    env = got["env"]
    assert (env["HERMES_KANBAN_TASK"], env["HERMES_KANBAN_RUN_ID"], env["HERMES_KANBAN_DB"]) == (
        task.id, str(s["run_id"]), str(board.paths.db))
    assert env["HERMES_HOME"] == os.environ["HERMES_HOME"]
    # The watcher carries no run token (a process with one is taken for the worker) and leads its own session.
    watcher = psutil.Process(s["watcher"])
    assert "HERMES_KANBAN_RUN_ID" not in watcher.environ()
    assert os.getsid(s["watcher"]) == s["watcher"]
    assert spawn.watcher_of(board.paths, s["run_id"]) == s["watcher"]
    release.write_text("go")
    wait_for(lambda: ended_run(board, task.id), what="the run to be recorded")
    assert "to the log" in (board.paths.logs_dir / f"{task.id}.log").read_text()


#: holds the board's write lock (BEGIN IMMEDIATE) until a line arrives on stdin
LOCKER = ("import sys, apsw\nc = apsw.Connection(sys.argv[1]); c.setbusytimeout(30000); c.execute('BEGIN IMMEDIATE')\n"
          "print('locked', flush=True); sys.stdin.readline(); c.execute('ROLLBACK')")


def test_an_exit_0_the_locked_board_cannot_take_is_spooled_then_recorded(board: Board, reaper: Reaper,
                                                                         tmp_path: Path) -> None:
    from hermes_cli.kanban.durability import spool

    configure(board, backup_interval="off", worker_ttl="30s")
    release = tmp_path / "release"
    task, _ = board.create_task("exits 0", command=pycmd(WAIT_THEN_EXIT, str(release), "0"), max_retries=0)
    p = subprocess.run([HERMES, "kanban", "dispatch", "--json"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "HERMES_KANBAN_BUSY_TIMEOUT_MS": "50"})  # the watcher inherits it
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)["started"][0]
    reaper.own(s["pid"])
    reaper.own(s["watcher"])
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(board.paths.db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        release.write_text("go")
        spooled = board.paths.spool_dir / spool.file_name(task.id, s["run_id"])
        wait_for(spooled.exists, what="the watcher to spool the exit 0 the locked board cannot take")
        assert runs_of(board, task.id)[-1].is_open
    finally:
        locker.communicate("go\n", timeout=30)  # the lock goes; its pipes are closed
    run = wait_for(lambda: ended_run(board, task.id), what="the watcher to record it once the lock is gone")
    assert (run.outcome, run.exit_code, run.summary) == ("completed", 0, "exited 0")
    wait_for(lambda: not spooled.exists(), what="the spooled exit 0 to be filed as applied")
    wait_for(lambda: gone(s["watcher"]), what="the watcher to exit")
