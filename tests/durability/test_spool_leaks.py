"""The spool drill's helpers clean up after a failure: a drill that fails on its first worker still reaps every
worker process and closes every pipe, so the failure is reported where it happened and not as a ResourceWarning in
whichever unrelated test the garbage collector happens to run in (`filterwarnings = error`)."""

from __future__ import annotations

import os

import psutil
import pytest

from .test_spool import run_workers, setup_board


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_drill_failing_on_its_first_worker_leaves_no_process_or_pipe_behind(paths) -> None:
    claims, _ = setup_board()
    before = open_fds()
    # The board is healthy, so the workers complete for real instead of spooling: the drill's check of the first
    # worker's stderr fails while the six others may still be running.
    with pytest.raises(AssertionError):
        run_workers(claims, {})
    assert psutil.Process().children() == []  # none running, none left unreaped (a zombie is a child too)
    assert open_fds() == before  # every worker's stdout and stderr pipe closed
