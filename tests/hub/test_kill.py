"""The kill test of issue 14: the sync SIGKILLed at random points, over and over, while a writer streams events into
the board -> the hub equals the local board (every event and every task compared), 0 duplicates, 0 gaps. Each
restarted sync resumes from the hub's ack and takes the lease of its dead predecessor over at once (same host).

Most syncs are forked from this process after the imports (a fresh interpreter costs ~1 s on a loaded 2-core
machine, which would spend the kill budget on start-up instead of on syncing); every tenth is the real
`hermes kanban sync --follow` command. Both run the same Sync loop; the board and hub connections are opened in the
child, after the fork (this process holds none when it forks)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.hub.sync import Sync

from .conftest import CMD, assert_hub_equals_local, board_id, hermes, hub_ack, last_json

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("HERMES_HUB_KILLS", "100"))
EVENTS = int(os.environ.get("HERMES_HUB_KILL_EVENTS", "10000"))


def fork_sync(url: str) -> int:
    pid = os.fork()
    if pid == 0:  # the child: sync until killed; never return into pytest
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            with Board.open() as b:
                Sync(b, url).run(follow=True)
            code = 0
        finally:
            os._exit(code)
    return pid


@pytest.mark.slow
def test_sync_killed_at_random_points_loses_and_doubles_nothing(hub_url, monkeypatch):
    rng = random.Random(int(os.environ.get("HERMES_HUB_KILL_SEED", "14")))
    monkeypatch.setenv("HERMES_KANBAN_SYNCHRONOUS", "normal")  # the writer's pace, not the disk's, is the point
    assert hermes("create", "first").returncode == 0  # the board exists before any sync races its creation
    writer = subprocess.Popen([sys.executable, "-m", "tests.hub.writer", "default", str(EVENTS), "0.003"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kills = cli_kills = 0
    acks = []
    started = time.monotonic()
    try:
        while kills < KILLS or writer.poll() is None:
            if kills % 10 == 9:
                cli = subprocess.Popen([*CMD, "sync", "--hub", hub_url, "--follow", "--quiet", "--json"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                time.sleep(rng.uniform(0.8, 2.0))  # its interpreter starts first; then a random point of its work
                cli.send_signal(signal.SIGKILL)
                _, err = cli.communicate(timeout=30)
                assert cli.returncode == -signal.SIGKILL, err  # it was running, not failing, when killed
                cli_kills += 1
            else:
                pid = fork_sync(hub_url)
                time.sleep(rng.uniform(0.01, 0.4))
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
            kills += 1
            if kills % 10 == 0:
                acks.append(hub_ack(hub_url, board_id()))
            assert time.monotonic() - started < 300, "the kill loop is far over its bound"
    finally:
        if writer.poll() is None:
            writer.kill()
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert int(out.strip()) >= EVENTS
    # The killed syncs made progress (the ack only grows); the last run finishes the job after a dead predecessor.
    assert acks == sorted(acks) and acks[-1] > 0, acks
    final = hermes("sync", "--hub", hub_url, "--once", "--json")
    assert final.returncode == 0, final.stderr
    assert last_json(final.stdout)["took_over"] == "dead"
    events, tasks = assert_hub_equals_local(hub_url)
    assert events >= EVENTS and tasks > 0
    print(f"\nkill test: {kills} SIGKILLs ({cli_kills} of the CLI command), {events} events and {tasks} tasks "
          f"compared, {time.monotonic() - started:.1f}s; hub ack every 10 kills: {acks}")
