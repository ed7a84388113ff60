"""--all-boards: every board dispatched in its own process; a corrupt or slow board never stops the others."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from hermes_cli.kanban import Board, TaskStatus

from .conftest import HERMES, Reaper, configure, outcomes, runs_of, wait_for, worker

pytestmark = pytest.mark.slow


def _board(slug: str, reaper: Reaper, *commands: str) -> list[str]:
    with Board.open(slug, create=True) as b:
        configure(b)
        reaper.watch_board(b)
        return [b.create_task(f"{slug} {i}", command=c)[0].id for i, c in enumerate(commands)]


def test_a_corrupt_board_is_reported_and_the_others_are_dispatched(reaper: Reaper) -> None:
    fast = _board("alpha", reaper, worker("work", "0.05"), worker("work", "0.05"))
    slow = _board("slow", reaper, worker("work", "2"))
    _board("broken", reaper, worker("work", "0.05"))
    broken = Board.open("broken")
    db = broken.paths.db
    broken.close()
    for sidecar in (f"{db}-wal", f"{db}-shm"):
        if os.path.exists(sidecar):
            os.unlink(sidecar)
    with open(db, "r+b") as f:  # no connection to it is open in this process any more
        f.seek(0)
        f.write(b"this is not a database, it was overwritten" * 100)

    p = subprocess.run([HERMES, "kanban", "dispatch", "--all-boards", "--until-idle", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 4, p.stderr
    out = json.loads(p.stdout)
    by = {b["board"]: b for b in out["boards"]}
    assert sorted(by) == ["alpha", "broken", "slow"]
    assert by["broken"]["exit_code"] == 4 and "corrupt" in by["broken"]["error"]
    assert by["alpha"]["exit_code"] == 0 and by["alpha"]["result"]["completed"] == 2
    assert by["slow"]["exit_code"] == 0 and by["slow"]["result"]["completed"] == 1
    with Board.open("alpha") as a, Board.open("slow") as s:
        assert all(a.get_task(t).status == TaskStatus.DONE for t in fast)
        # the slow board did not hold the fast one up: alpha's work was done before slow's
        assert max(runs_of(a, t)[0].ended_at for t in fast) < runs_of(s, slow[0])[0].ended_at
        assert outcomes(s, slow[0]) == ["completed"]


def test_daemon_restarts_a_failed_board_and_forwards_signals(reaper: Reaper) -> None:
    _board("good", reaper)
    _board("bad", reaper)
    bad_board = Board.open("bad")
    configure(bad_board, max_spawn=0)  # invalid: its dispatcher exits 1 each time it is started
    bad_board.close()
    d = reaper.hermes("kanban", "daemon", "--all-boards", "--board-retry", "300ms", "--json")
    wait_for(lambda: d.stderr().count("board bad: config") >= 2, what="the bad board to be retried")
    with Board.open("good") as g:
        task, _ = g.create_task("while the other board fails", command=worker("work", "0.05"))
        wait_for(lambda: g.get_task(task.id).status == TaskStatus.DONE, what="the good board to dispatch")
    d.popen.send_signal(signal.SIGTERM)
    code, out, err = d.finish(timeout=30)
    by = {b["board"]: b for b in out["boards"]}
    assert by["good"]["result"]["reason"] == "signal" and by["good"]["result"]["completed"] == 1
    assert by["bad"]["starts"] >= 2 and by["bad"]["exit_code"] == 1
    assert "max_spawn must be an integer from 1 to 1000, got 0" in by["bad"]["error"]
    assert code == 1, err  # the worst exit code of the boards
