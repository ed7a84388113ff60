"""What the dispatcher records for real worker processes: exits, crashes and retries, reports, timeouts, spawn
failures, the worker contract (argv, environment, cwd, session, log). The dispatcher runs in this process
(`--until-idle` semantics); the workers are real processes."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.core.errors import HermesError, InvalidValue, StorageError
from hermes_cli.kanban.dispatch.result import StopReason
from hermes_cli.kanban.dispatch.supervisor import Dispatcher
from hermes_cli.kanban.domain.config import load_settings

from .conftest import alive, configure, dispatch, outcomes, pycmd, runs_of, worker


def test_exit_zero_completes_and_nonzero_crashes_then_gives_up(board: Board) -> None:
    ok, _ = board.create_task("ok", command=worker("work", "0.05"))
    bad, _ = board.create_task("bad", command=pycmd("import sys; sys.exit(3)"), max_retries=1)
    res = dispatch(board)
    assert res.reason == StopReason.IDLE and res.error is None
    assert board.get_task(ok.id).status == TaskStatus.DONE
    assert [(r.outcome, r.summary, r.exit_code) for r in runs_of(board, ok.id)] == [("completed", "exited 0", 0)]
    t = board.get_task(bad.id)
    assert t.status == TaskStatus.BLOCKED and t.attempts == 2
    runs = runs_of(board, bad.id)
    assert [(r.outcome, r.summary, r.exit_code) for r in runs] == [("crashed", "exited 3", 3)] * 2
    # the retry waited for its backoff (1 s +-25% for the first retry)
    assert runs[1].started_at - runs[0].ended_at >= 0.75
    assert [e.kind for e in board.events(task_id=bad.id, kinds=["crashed", "gave_up"])] == [
        "crashed", "crashed", "gave_up"]
    counts = (res.counts["spawned"], res.counts["completed"], res.counts["crashed"], res.counts["gave_up"])
    assert counts == (3, 1, 2, 1)


def test_a_workers_own_report_wins_over_its_exit_code(board: Board) -> None:
    blocks, _ = board.create_task("blocks itself, exits 1", command=worker("block", "needs a key"))
    reports, _ = board.create_task("reports, exits 0", command=worker("report", "all written"))
    then_fails, _ = board.create_task(
        "completes, then exits 3",
        command=pycmd("import subprocess, sys; subprocess.check_call([sys.executable, '-m', 'hermes_cli.main', "
                      "'kanban', 'complete', '--summary', 'done early']); sys.exit(3)"),
    )
    res = dispatch(board)
    assert board.get_task(blocks.id).status == TaskStatus.BLOCKED
    assert outcomes(board, blocks.id) == ["blocked"]  # not crashed, not retried
    assert [r.summary for r in runs_of(board, blocks.id)] == ["needs a key"]
    assert board.get_task(reports.id).summary == "all written"
    assert outcomes(board, reports.id) == ["completed"]
    done = board.get_task(then_fails.id)
    assert done.status == TaskStatus.DONE and done.summary == "done early" and done.attempts == 1
    assert res.counts["reported"] == 3 and res.counts["crashed"] == 0


def test_worker_contract_argv_env_cwd_session_log(board: Board) -> None:
    code = (
        "import json, os, sys; "
        "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'sid_is_pid': os.getsid(0) == os.getpid(), "
        "'stdin': os.readlink('/proc/self/fd/0'), "
        "'env': {k: v for k, v in os.environ.items() if k.startswith('HERMES_KANBAN_')}}))"
    )
    task, _ = board.create_task("a 'quoted' title; $(no shell)", command=pycmd(code, "{task_id}", "{run_id}",
                                                                                 "{board}", "{workspace}", "{title}"))
    dispatch(board)
    run = runs_of(board, task.id)[0]
    ws = board.paths.workspaces_dir / task.id
    log = (board.paths.logs_dir / f"{task.id}.log").read_text(encoding="utf-8")
    seen = json.loads(next(ln for ln in log.splitlines() if ln.startswith("{")))
    assert seen["argv"] == [task.id, str(run.id), "default", str(ws), "a 'quoted' title; $(no shell)"]
    assert seen["cwd"] == str(ws) and seen["sid_is_pid"] and seen["stdin"] == "/dev/null"
    assert seen["env"] == {
        "HERMES_KANBAN_DB": str(board.paths.db), "HERMES_KANBAN_BOARD": "default", "HERMES_KANBAN_TASK": task.id,
        "HERMES_KANBAN_RUN_ID": str(run.id), "HERMES_KANBAN_WORKSPACE": str(ws),
    }
    # the dispatcher's own lines frame the worker's output in the task's log
    argv = pycmd(code, task.id, str(run.id), "default", str(ws), task.title)
    assert log.splitlines()[0].endswith(f"run {run.id} attempt 1: {argv}")
    assert f"{task.id} run {run.id} completed" in log.splitlines()[-1]
    assert run.pid is not None and run.pid_create_time is not None and run.host
    assert oct(os.stat(ws).st_mode & 0o777) == "0o700"


def test_spawn_failures_are_attempts_so_a_spawn_loop_is_bounded(board: Board) -> None:
    task, _ = board.create_task("no such program", command="/nonexistent/worker --go", max_retries=1)
    res = dispatch(board)
    t = board.get_task(task.id)
    assert t.status == TaskStatus.BLOCKED and t.attempts == 2
    runs = runs_of(board, task.id)
    assert [r.outcome for r in runs] == ["crashed", "crashed"]
    assert all(r.summary.startswith("spawn failed: FileNotFoundError: ") for r in runs)
    assert res.counts["spawn_failed"] == 2 and res.counts["gave_up"] == 1


def test_failure_limit_caps_attempts_below_max_retries(board: Board) -> None:
    task, _ = board.create_task("always fails", command=pycmd("raise SystemExit(1)"), max_retries=5)
    dispatch(board, failure_limit=2)
    t = board.get_task(task.id)
    assert t.status == TaskStatus.BLOCKED and t.attempts == 2
    assert [e.kind for e in board.events(task_id=task.id, kinds=["gave_up"])] == ["gave_up"]


def test_timeout_kills_the_whole_group_even_when_sigterm_is_ignored(board: Board) -> None:
    code = (
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "p = subprocess.Popen(['sleep', '60']); open('grandchild.pid', 'w').write(str(p.pid)); time.sleep(60)"
    )
    task, _ = board.create_task("hangs", command=pycmd(code), max_runtime="1s", max_retries=0)
    log: list[str] = []
    res = dispatch(board, log=log)
    t = board.get_task(task.id)
    assert t.status == TaskStatus.BLOCKED
    run = runs_of(board, task.id)[0]
    assert run.outcome == "timed_out" and run.exit_code == -9
    assert run.summary == "killed after max runtime 1s (killed by SIGKILL)"
    assert any("ignored SIGTERM for 0.5s: SIGKILL" in line for line in log)
    grandchild = int((board.paths.workspaces_dir / task.id / "grandchild.pid").read_text())
    assert not alive(grandchild, None)
    assert res.counts["timed_out"] == 1


def test_max_runtime_default_applies_to_tasks_without_their_own(board: Board) -> None:
    task, _ = board.create_task("hangs", command=worker("hang"), max_retries=0)
    dispatch(board, max_runtime_default="1s")
    assert outcomes(board, task.id) == ["timed_out"]


def test_tasks_without_a_command_are_left_for_pull_workers_unless_the_board_has_a_default(board: Board) -> None:
    task, _ = board.create_task("manual")
    res = dispatch(board)
    assert res.counts["spawned"] == 0 and board.get_task(task.id).status == TaskStatus.READY
    configure(board, default_command=worker("work", "0.05", "{title}"))
    dispatch(board)
    assert board.get_task(task.id).status == TaskStatus.DONE
    assert "manual" in (board.paths.logs_dir / f"{task.id}.log").read_text(encoding="utf-8")


def test_a_chain_runs_in_dependency_order(board: Board) -> None:
    a, _ = board.create_task("a", command=worker("work", "0.1"))
    b, _ = board.create_task("b", command=worker("work", "0.1"), parents=[a.id])
    c, _ = board.create_task("c", command=worker("work", "0.1"), parents=[b.id])
    dispatch(board)
    ra, rb, rc = (runs_of(board, t.id)[0] for t in (a, b, c))
    assert ra.ended_at <= rb.started_at and rb.ended_at <= rc.started_at
    assert all(board.get_task(t.id).status == TaskStatus.DONE for t in (a, b, c))


def test_once_starts_at_most_max_spawn_and_waits_for_them(board: Board) -> None:
    tasks = [board.create_task(f"t{i}", command=worker("work", "0.2"))[0] for i in range(5)]
    res = dispatch(board, once=True, max_spawn=2)
    assert res.reason == StopReason.ONCE and res.counts["spawned"] == 2 and res.left_running == []
    statuses = sorted(str(board.get_task(t.id).status) for t in tasks)
    assert statuses == ["done", "done", "ready", "ready", "ready"]


def test_max_spawn_bounds_concurrency(board: Board) -> None:
    tasks = [board.create_task(f"t{i}", command=worker("work", "0.3"))[0] for i in range(6)]
    res = dispatch(board, max_spawn=2)
    # Every task really ran, once: an empty list of runs would satisfy the cap vacuously.
    assert res.counts["spawned"] == 6 and res.counts["completed"] == 6
    assert all(board.get_task(t.id).status == TaskStatus.DONE for t in tasks)
    spans = sorted((r.started_at, r.ended_at) for t in tasks for r in runs_of(board, t.id))
    assert len(spans) == 6 and all(e is not None for _, e in spans)
    peak = max(sum(1 for s, e in spans if s <= t0 < e) for t0, _ in spans)
    # The cap held, and was reached: two 0.3 s workers claimed in the same pass overlap whatever the load.
    assert peak == 2


def test_the_dispatcher_wakes_for_a_due_retry_without_a_poll(board: Board) -> None:
    configure(board, poll_interval="1h")
    task, _ = board.create_task("flaky", command=worker("crash-once"), max_retries=1)
    res = dispatch(board, timeout=20)
    # Had it slept a poll interval (1 h) instead of waking at the retry, it would have stopped on its timeout.
    assert res.reason == StopReason.IDLE
    assert outcomes(board, task.id) == ["crashed", "completed"]


def test_a_refused_log_path_is_a_failed_attempt_not_a_dispatcher_crash(board: Board, tmp_path) -> None:
    task, _ = board.create_task("x", command=worker("work", "0.01"), max_retries=0)
    board.paths.logs_dir.mkdir(mode=0o700, exist_ok=True)
    (board.paths.logs_dir / f"{task.id}.log").symlink_to(tmp_path / "elsewhere.log")
    res = dispatch(board)
    assert res.error is None and res.counts["spawn_failed"] == 1
    assert runs_of(board, task.id)[0].summary.startswith("spawn failed: OSError: ")
    assert not (tmp_path / "elsewhere.log").exists()


def test_a_worker_that_never_heartbeats_keeps_its_lease_while_alive(board: Board) -> None:
    configure(board, worker_ttl="1s")  # the worker outlives its lease 2.5 times over
    task, _ = board.create_task("silent", command=worker("work", "2.5"))
    res = dispatch(board)
    assert outcomes(board, task.id) == ["completed"]
    assert res.counts["reclaimed"] == 0
    run = runs_of(board, task.id)[0]
    assert run.heartbeat_at is not None and run.heartbeat_at > run.started_at + 1.0  # extended by the dispatcher


def test_a_nul_byte_in_a_stored_command_is_a_failed_spawn_not_a_dispatcher_crash(board: Board) -> None:
    # `create` refuses a NUL byte now; a board written before that (or by hand) may still hold one.
    task, _ = board.create_task("legacy command", command="echo placeholder", max_retries=1)
    board.db.write(lambda: board.db.execute("UPDATE tasks SET command = ? WHERE id = ?", ("echo a\x00b", task.id)))
    other, _ = board.create_task("fine", command=worker("work", "0.01"))
    res = dispatch(board)
    assert res.reason == StopReason.IDLE and res.error is None
    t = board.get_task(task.id)
    assert t.status == TaskStatus.BLOCKED and t.attempts == 2  # retried, then given up: never left running
    assert [r.summary for r in runs_of(board, task.id)] == ["spawn failed: ValueError: embedded null byte"] * 2
    assert res.counts["spawn_failed"] == 2 and res.counts["gave_up"] == 1
    assert outcomes(board, other.id) == ["completed"]


def test_a_nul_byte_in_the_default_command_is_a_failed_spawn_not_a_dispatcher_crash(board: Board) -> None:
    # config.toml refuses it (test_units); a DispatchSettings built in code is not checked there.
    task, _ = board.create_task("no command of its own", max_retries=0)
    settings = replace(load_settings(board.paths), default_command="echo {title}\x00")
    res = Dispatcher(board, settings, until_idle=True, timeout=30).run()
    assert res.reason == StopReason.IDLE and res.error is None
    assert board.get_task(task.id).status == TaskStatus.BLOCKED
    assert [r.summary for r in runs_of(board, task.id)] == ["spawn failed: ValueError: embedded null byte"]
    assert res.counts["spawn_failed"] == 1 and res.counts["gave_up"] == 1


class FailingChores(Dispatcher):
    """A dispatcher whose per-tick chores (the spool drain) fail on the first `failures` ticks, like a drain meeting
    a spool or board it cannot handle. Injected here because the drain itself is hardened not to raise."""

    def __init__(self, *args: object, failures: int, error: Exception, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.failures, self.error = failures, error

    def _per_tick_maintenance(self) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error
        super()._per_tick_maintenance()


@pytest.mark.parametrize("error", [StorageError("spool drain failed: disk full"),
                                   InvalidValue("spool drain failed: bad report"),
                                   PermissionError(13, "Permission denied")])
def test_failing_per_tick_chores_are_logged_once_and_the_loop_carries_on(board: Board, error: Exception) -> None:
    tasks = [board.create_task(f"still dispatched {i}", command=worker("work", "0.05"))[0] for i in range(2)]
    log: list[str] = []
    # One worker at a time: at least three ticks (start one; reap it and start the other; reap that), the first
    # two of which fail.
    d = FailingChores(board, load_settings(board.paths, {"max_spawn": 1}), until_idle=True, timeout=30,
                      log=log.append, failures=2, error=error)
    res = d.run()
    assert res.reason == StopReason.IDLE and res.error is None and d.failures == 0
    assert [outcomes(board, t.id) for t in tasks] == [["completed"]] * 2
    text = error.message if isinstance(error, HermesError) else f"PermissionError: {error}"
    warnings = [ln for ln in log if "per-tick maintenance" in ln]
    assert warnings == [f"warning: per-tick maintenance failed: {text}; trying again every tick",
                        "per-tick maintenance works again"], log
