"""`hermes kanban dispatch` and `hermes kanban demo` as a user runs them: exact error lines and exit codes, JSON,
and bad input never changing the board."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.locks import file_lock
from hermes_cli.kanban.core.paths import ensure_private_dir, resolve
from hermes_cli.kanban.dispatch import lease as lease_api
from hermes_cli.kanban.store import leases as leases_sql

from .conftest import HERMES, Reaper, configure, wait_for


def hermes(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERMES, "kanban", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["--once", "--until-idle"], 2, "error: use either --once or --until-idle, not both"),
        (["--max-age", "5s"], 2, "error: --max-age only applies with --break-lock"),
        (["--board-retry", "5s"], 2, "error: --board-retry only applies with --all-boards"),
        (["--all-boards", "--board", "default"], 2, "error: use either --board or --all-boards, not both"),
        (["--max-spawn", "abc"], 2, "error: Invalid value for '--max-spawn': 'abc' is not a valid integer."),
        (["--max-spawn", "0"], 1, "error: invalid --max-spawn 0: must be an integer from 1 to 1000"),
        (["--failure-limit", "-1"], 1, "error: invalid --failure-limit -1: must be an integer from 1 to 1000"),
        (["--timeout", "soon"], 1,
         "error: invalid --timeout 'soon': use a number with an optional unit, e.g. 90s, 30m, 2h, 1d"),
        (["--max-runtime-default", "0s"], 1,
         "error: invalid --max-runtime-default '0s': must be more than 0 and at most 365d"),
        (["--board", "nope"], 1, "error: board nope does not exist (see: hermes kanban boards create nope)"),
    ],
)
def test_bad_input_exact_errors_and_no_change(args: list[str], code: int, error: str) -> None:
    with Board.open() as b:
        before = b.last_event_id()
    p = hermes("dispatch", "--once", *args) if "--once" not in args else hermes("dispatch", *args)
    assert (p.returncode, p.stderr) == (code, error + "\n")
    with Board.open() as b:
        assert b.last_event_id() == before  # not even a dispatcher_started event
        assert b.list_tasks() == []


def test_json_errors_go_to_stdout_as_well() -> None:
    p = hermes("dispatch", "--once", "--max-spawn", "0", "--json")
    assert p.returncode == 1
    assert json.loads(p.stdout) == {"error": {"code": "invalid_value",
                                              "message": "invalid --max-spawn 0: must be an integer from 1 to 1000"}}


def test_a_bad_config_file_is_named() -> None:
    with Board.open() as b:
        configure(b, fast=False, max_spwan=2)
        path = b.paths.config_file
    p = hermes("dispatch", "--once")
    assert p.returncode == 1
    assert p.stderr.startswith(f"error: config {path}: unknown setting dispatch.max_spwan (known: ")


def test_an_empty_board_once_prints_a_summary() -> None:
    p = hermes("dispatch", "--once", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["reason"] == "once" and out["skipped"] is False and out["spawned"] == 0 and out["error"] is None
    p = hermes("dispatch", "--once")
    assert p.returncode == 0
    assert p.stdout.startswith("dispatch default: stopped (once) after ")
    assert "spawned 0, completed 0" in p.stdout


def test_help_has_an_example() -> None:
    for cmd in ("dispatch", "demo"):
        p = hermes(cmd, "--help")
        assert p.returncode == 0 and "Example:" in p.stdout


@pytest.mark.slow
def test_demo_runs_real_workers_and_keeps_its_board_on_request() -> None:
    p = hermes("demo", "--keep", "--json", timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    home = Path(out["home"])
    try:
        assert out["ok"] and out["problems"] == [] and len(out["tasks"]) == 10
        by_title = {t["title"]: t for t in out["tasks"]}
        assert by_title["upload (crashes once, then succeeds)"]["runs"] == ["crashed", "completed"]
        assert by_title["stuck job (times out)"]["runs"] == ["timed_out"]
        assert by_title["stuck job (times out)"]["outcome"] == "blocked"
        assert by_title["publish report (worker reports itself)"]["summary"] == "report published by the worker"
        assert out["dispatch"]["reason"] == "idle"
        # kept, and usable with the normal commands
        listed = subprocess.run([HERMES, "kanban", "list", "--board", "demo", "--json"], capture_output=True,
                                text=True, timeout=30, env={"HERMES_HOME": str(home), "PATH": "/usr/bin:/bin"})
        assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 10
    finally:
        shutil.rmtree(home)
    p = hermes("demo", timeout=60)
    assert p.returncode == 0, p.stderr
    assert "demo ok: every task ended as expected" in p.stdout
    assert "(removed; --keep keeps it)" in p.stdout


STAMPED = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} dispatch default: ")


def test_a_lost_lease_is_one_error_line_and_the_summary_is_json(board: Board, reaper: Reaper) -> None:
    d = reaper.hermes("kanban", "daemon", "--json")
    lease = wait_for(lambda: lease_api.read_lease(board), what="the dispatcher's lease")
    # Another holder takes the board; its host name comes from the database, and here it carries a line break.
    board.db.write(lambda: leases_sql.put(board.db, host="evil\nhost", pid=1, pid_create_time=None,
                                          epoch=lease.epoch + 100, now=time.time()))
    code, out, err = d.finish(timeout=30)
    assert code == 3, err
    assert out["reason"] == "lease_lost" and out["error"]["code"] == "lease_held"
    assert "evil\nhost:1" in out["error"]["message"]  # JSON carries the message as it is
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: dispatcher lease (epoch {lease.epoch}) was lost; it is now held by "
                                f"evil\\nhost:1 (epoch {lease.epoch + 100}, refreshed "), err
    assert errors[0].endswith("s ago)"), err
    assert all(STAMPED.match(ln) for ln in lines if ln not in errors), err  # progress lines: one line each too


def test_an_interrupt_before_the_dispatcher_starts_still_prints_json(reaper: Reaper) -> None:
    """SIGINT while the command is still opening the board (here: waiting for the board's init lock, held by us):
    the exit is 130 with `error: aborted`, and --json still gets a JSON object on stdout."""
    paths = resolve()
    ensure_private_dir(paths.dir)
    with file_lock(paths.dir / ".init.lock"):
        d = reaper.hermes("kanban", "dispatch", "--once", "--json")
        # Python is up and polling for the lock (the only sleep before the board is open): SIGINT is a
        # KeyboardInterrupt there, not the default action that would kill it before any output.
        wait_for(lambda: Path(f"/proc/{d.pid}/wchan").read_text() in ("hrtimer_nanosleep", "do_nanosleep"),
                 what="the dispatcher to wait for the init lock")
        d.popen.send_signal(signal.SIGINT)
        code, out, err = d.finish(timeout=30)
    assert code == 130 and err.endswith("error: aborted\n"), err  # as for any command interrupted
    assert out == {"error": {"code": "aborted", "message": "aborted"}}
