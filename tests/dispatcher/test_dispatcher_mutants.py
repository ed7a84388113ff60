"""What the dispatcher records and says about runs it did not start itself and about its workers' exits, pinned
down where mutation testing (bench/mutation.sh dispatcher, docs/mutation.md) found that test_outcomes would not
notice a change: runs of pull workers and of a just-started earlier dispatcher are left alone, and the progress log
names each outcome, the retry and the give-up. The dispatcher runs in this process; the workers are real processes.
"""

from __future__ import annotations

import re
import subprocess

import psutil

from hermes_cli.kanban import Board
from hermes_cli.kanban.core import procs

from .conftest import dispatch, outcomes, pycmd, runs_of


def test_a_pull_workers_run_without_a_pid_is_left_to_its_lease(board: Board) -> None:
    task, _ = board.create_task("pulled by hand")  # no command: the dispatcher would not start it anyway
    claim = board.claim(task.id, worker="puller", ttl=600)
    assert claim is not None
    # older than an earlier dispatcher's grace: only the worker name says it is not a dispatcher's
    board.db.write(lambda: board.db.execute("UPDATE runs SET started_at = started_at - 60"))
    log: list[str] = []
    res = dispatch(board, once=True, log=log)
    assert res.error is None
    run = runs_of(board, task.id)[0]
    assert (run.ended_at, run.pid) == (None, None)  # not closed, not adopted: a pull worker reports for itself
    assert not any(claim.task_id in line for line in log)


def test_an_earlier_dispatchers_run_is_given_its_grace_before_it_is_judged(board: Board) -> None:
    task, _ = board.create_task("claimed a moment ago", command=pycmd("pass"))
    claim = board.claim(task.id, worker=f"dispatcher@{procs.HOST}:999999", ttl=600)
    assert claim is not None
    res = dispatch(board, once=True)
    assert res.error is None
    run = runs_of(board, task.id)[0]
    assert run.ended_at is None  # its dispatcher may still be about to record the worker's pid


def test_the_log_names_each_outcome_the_retry_and_the_give_up(board: Board) -> None:
    # the ok worker runs at least 0.2 s, so its "completed after" figure is a real duration on a fast machine too
    ok, _ = board.create_task("ok", command=pycmd("import time; time.sleep(0.2)"))
    bad, _ = board.create_task("bad", command=pycmd("raise SystemExit(3)"), max_retries=1)
    log: list[str] = []
    res = dispatch(board, log=log)
    assert res.error is None
    [ok_run] = runs_of(board, ok.id)
    first, second = runs_of(board, bad.id)
    lines = "\n".join(log)
    assert f"{ok.id} run {ok_run.id} completed after " in lines and ": exited 0" in lines
    crashed = [ln for ln in log if ln.startswith(f"{bad.id} run {first.id} crashed")]
    assert len(crashed) == 1 and ": exited 3; retry in " in crashed[0] and crashed[0].endswith("s")
    gave_up = [ln for ln in log if ln.startswith(f"{bad.id} run {second.id} crashed")]
    assert len(gave_up) == 1 and gave_up[0].endswith(": exited 3; gave up after 2 attempts (blocked)")
    # the figures are durations: how long the worker ran, and the first retry's backoff (1 s +-25 %)
    took = re.search(r" completed after ([0-9.]+)s", lines)
    retry = re.search(r"; retry in ([0-9.]+)s", crashed[0])
    assert took is not None and 0.2 <= float(took.group(1)) < 60
    assert retry is not None and float(retry.group(1)) <= 1.3
    assert (res.counts["completed"], res.counts["crashed"], res.counts["gave_up"]) == (1, 2, 1)


def test_a_lost_run_counts_as_an_attempt_towards_the_failure_limit(board: Board) -> None:
    task, _ = board.create_task("never started", command=pycmd("pass"), max_retries=5)
    claim = board.claim(task.id, worker=f"dispatcher@{procs.HOST}:999999", ttl=600)
    assert claim is not None
    board.db.write(lambda: board.db.execute("UPDATE runs SET started_at = started_at - 60"))  # past the grace
    dispatch(board, failure_limit=1)
    assert outcomes(board, task.id) == ["crashed"]
    assert board.get_task(task.id).status == "blocked"  # gave up: the lost run was attempt 1 of 1


def _dead_pid() -> tuple[int, float]:
    p = subprocess.Popen(["true"])
    started = psutil.Process(p.pid).create_time()
    p.wait()
    return p.pid, started


def test_a_dead_workers_run_that_turns_out_closed_is_noted_not_fatal(board: Board) -> None:
    """A run listed open whose task has moved on (here: a board edited by hand) is closed by nobody: recording its
    dead worker's exit meets the fence (StaleRun), which the dispatcher notes, counting a report, and goes on."""
    reported, _ = board.create_task("reported")
    moved_on, _ = board.create_task("moved on")
    runs = {}
    for t in (reported, moved_on):
        c = board.claim(t.id, worker="w", ttl=600)
        assert c is not None
        runs[t.id] = c.run_id
        board.block(t.id, reason="by hand", force=True)
    pid, started = _dead_pid()
    for t, outcome in ((reported, "completed"), (moved_on, None)):
        board.db.write(lambda t=t, outcome=outcome: board.db.execute(
            "UPDATE runs SET ended_at = NULL, outcome = ?, host = ?, pid = ?, pid_create_time = ? WHERE id = ?",
            (outcome, procs.HOST, pid, started, runs[t.id])))
    log: list[str] = []
    res = dispatch(board, once=True, log=log)
    assert res.error is None and res.counts["reported"] == 1
    text = "\n".join(log)
    assert f"{reported.id} run {runs[reported.id]}: worker pid {pid} is gone" in text
    assert "; the run was already closed (completed)" in text
    assert "; the run was already closed (None)" in text
