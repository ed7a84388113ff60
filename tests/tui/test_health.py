"""The TUI's health field shows `doctor`'s verdict: the same words as the last line `hermes kanban doctor` prints,
for a healthy board (the README tour: a ready task for pull workers, no dispatcher, no backup yet) and for a board
whose only task gave up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hermes_cli.kanban import Board
from tui.widgets.status import StatusLine

from .conftest import SIZE, RecordingApp, opened, plain, until

HERMES = str(Path(sys.executable).with_name("hermes"))


def doctor_verdict() -> tuple[int, str]:
    """`hermes kanban doctor` as an operator runs it: its exit code and its last line (the verdict)."""
    p = subprocess.run([HERMES, "kanban", "doctor"], capture_output=True, text=True, timeout=60, env=os.environ)
    return p.returncode, p.stdout.splitlines()[-1]


async def tui_health(app: RecordingApp, pilot: object) -> str:
    """The status line from `health:` on, once the first health check has come back."""
    status = app.query_one(StatusLine)
    await until(pilot, lambda: status.health is not None, what="the health check")
    line = plain(status.render(), width=400)
    return line.split("health: ", 1)[1].split("  ·  ")[0].strip()


async def test_a_board_of_pull_work_is_healthy_in_doctor_and_in_the_tui(board: Board) -> None:
    board.create_task("fetch the data", priority=5)  # the README tour: no command, claimed by `hermes kanban claim`
    code, verdict = doctor_verdict()
    assert (code, verdict) == (0, "healthy")
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        assert await tui_health(app, pilot) == verdict


async def test_a_task_that_gave_up_is_unhealthy_in_doctor_and_in_the_tui(board: Board) -> None:
    task = board.create_task("flaky job", max_retries=0)[0]
    claim = board.claim(task.id, worker="w")
    assert claim is not None
    board.finish_run(task.id, claim.run_id, "crashed", exit_code=1)
    code, verdict = doctor_verdict()
    assert (code, verdict) == (1, "unhealthy (warn)")
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        shown = await tui_health(app, pilot)
        assert shown.startswith(verdict + " (gave_up: 1 task(s) gave up"), shown
        assert task.id in shown
        # a person retries it: both agree the board is healthy again (the TUI on its next health check)
        board.unblock(task.id)
        assert doctor_verdict() == (0, "healthy")
        app.query_one(StatusLine).health = None
        app._status_polls = 0
        app.poll_status()
        assert await tui_health(app, pilot) == "healthy"
