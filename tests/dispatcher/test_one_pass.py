"""`hermes kanban dispatch` as hermes-agent's users call it from scripts and cron: one pass that returns
(`--max N`, `--dry-run`, `--json`), and `hermes kanban daemon`, the long-running supervisor. Real processes."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.dispatch import lease as lease_api

from .conftest import HERMES, PY, Reaper, configure, pycmd, wait_for

#: a worker that runs until the file named by its argument exists (so a test decides when it ends)
WAIT_FOR_FILE = "import os,sys,time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.02)"


def hermes(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERMES, "kanban", *args], capture_output=True, text=True, timeout=timeout)


def test_one_pass_starts_at_most_max_and_returns_while_its_workers_run(board: Board, reaper: Reaper,
                                                                      tmp_path: Path) -> None:
    configure(board, backup_interval="off")
    release = tmp_path / "release"
    ids = [board.create_task(f"t{i}", command=pycmd(WAIT_FOR_FILE, str(release)), priority=10 - i)[0].id
           for i in range(3)]
    p = hermes("dispatch", "--max", "2", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["reason"] == "pass" and out["spawned"] == 2 and out["error"] is None
    started = {s["task_id"]: s for s in out["started"]}
    assert set(started) == set(ids[:2])  # the best two by priority
    for s in started.values():
        reaper.own(s["pid"])
        assert psutil.pid_exists(s["pid"])  # the pass returned; its workers still run
        assert Path(s["workspace"]).is_dir()
    assert [board.get_task(i).status for i in ids] == [TaskStatus.RUNNING, TaskStatus.RUNNING, TaskStatus.READY]
    assert lease_api.read_lease(board) is None  # the pass released the board

    # A second pass adopts the two live workers (they count against max_spawn) and starts the third.
    configure(board, backup_interval="off", max_spawn=2)
    p = hermes("dispatch", "--json")
    assert p.returncode == 0, p.stderr
    again = json.loads(p.stdout)
    assert again["adopted"] == 2 and again["spawned"] == 0 and again["started"] == []
    assert board.get_task(ids[2]).status == TaskStatus.READY

    # The workers end; a pass records them (exit status unknown to a later pass: the run is closed either way)
    release.write_text("go")
    for s in started.values():
        wait_for(lambda pid=s["pid"]: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
                 what="the worker to exit")
    configure(board, backup_interval="off")
    p = hermes("dispatch", "--json")
    assert p.returncode == 0, p.stderr
    third = json.loads(p.stdout)
    assert [s["task_id"] for s in third["started"]] == [ids[2]]
    reaper.own(third["started"][0]["pid"])


def test_dry_run_says_what_a_pass_would_start_and_changes_nothing(board: Board) -> None:
    configure(board, backup_interval="off")
    a, _ = board.create_task("a", command=f"{PY} -c pass", priority=5)
    b, _ = board.create_task("b", command=f"{PY} -c pass")
    board.create_task("no command: a pull worker's")
    before = board.last_event_id()
    p = hermes("dispatch", "--dry-run", "--max", "1", "--json")
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    assert plan["dry_run"] is True and plan["skipped"] is False
    assert [w["task_id"] for w in plan["would_start"]] == [a.id]
    assert plan["would_start"][0]["command"] == f"{PY} -c pass"
    p = hermes("dispatch", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("dispatch default --dry-run: would start 2, would reclaim 0")
    assert f"would start: {b.id} 'b'" in p.stdout
    assert board.last_event_id() == before  # not even a lease event
    assert lease_api.read_lease(board) is None
    assert {board.get_task(t.id).status for t in (a, b)} == {TaskStatus.READY}


def test_a_pass_while_a_daemon_holds_the_board_does_nothing(board: Board, reaper: Reaper) -> None:
    configure(board, backup_interval="off", lease_grace="30s")
    d = reaper.hermes("kanban", "daemon", "--force", "--json")
    wait_for(lambda: (lease := lease_api.read_lease(board)) is not None and lease.pid == d.pid,
             what="the daemon's lease")
    for args in (["dispatch", "--json"], ["dispatch", "--dry-run", "--json"]):
        p = hermes(*args)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["skipped"] is True and out["message"].startswith("skipped: lease held by "), out
    d.popen.send_signal(signal.SIGTERM)
    code, data, _ = d.finish()
    assert code == 0 and data["reason"] == "signal"


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["dispatch", "--dry-run", "--once"], 2,
         "error: --dry-run previews one pass of one board; it does not take --once"),
        (["dispatch", "--max", "-1"], 2,
         "error: Invalid value for '--max': -1 is not in the range 0<=x<=1000."),
        (["daemon", "--max-spawn", "2", "--max", "3"], 2, "error: use either --max-spawn or --max, not both"),
        (["dispatch", "--backup-interval", "15m"], 2, "error: a one-pass dispatch takes no backups: use hermes kanban "
         "daemon --backup-interval DUR, or hermes kanban backup from cron"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(args: list[str], code: int, error: str) -> None:
    with Board.open() as b:
        b.create_task("x", command="true")
        before = b.last_event_id()
    p = hermes(*args)
    assert (p.returncode, p.stderr) == (code, error + "\n")
    with Board.open() as b:
        assert b.last_event_id() == before
