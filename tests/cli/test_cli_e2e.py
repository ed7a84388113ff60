"""A few end-to-end runs of the real `hermes` console script in subprocesses: exit statuses, stdout/stderr
separation, the worker environment, a closed pipe, and storage that is not a board."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hermes_cli.kanban import Board

from .conftest import HERMES, Result, run_hermes


def test_create_list_show_complete(hermes_home: Path) -> None:
    r = run_hermes("kanban", "create", "x", "--json")
    assert (r.code, r.err) == (0, "")
    task = json.loads(r.out)
    assert (task["title"], task["status"], task["created"]) == ("x", "ready", True)
    listed = run_hermes("kanban", "list", "--json")
    assert [t["id"] for t in json.loads(listed.out)] == [task["id"]]
    shown = run_hermes("kanban", "show", task["id"])
    assert shown.code == 0 and shown.out.startswith(f"{task['id']}  x\n  status ready ")
    done = run_hermes("kanban", "complete", task["id"])
    assert (done.code, done.out, done.err) == (0, f"{task['id']} done\n", "")
    # the board is its SQLite file, or (PostgreSQL) its URL file is absent and HERMES_KANBAN_URL says where it is
    assert (hermes_home / "kanban" / "boards" / "default" / "kanban.db").is_file() == (
        not os.environ.get("HERMES_KANBAN_URL"))


def test_a_worker_reports_through_its_environment_and_a_stale_one_is_fenced() -> None:
    t = json.loads(run_hermes("kanban", "create", "job", "--json").out)["id"]
    first = json.loads(run_hermes("kanban", "claim", t, "--ttl", "1ms", "--json").out)
    second = json.loads(run_hermes("kanban", "claim", t, "--json").out)  # the first lease has expired by now
    assert second["run_id"] != first["run_id"] and second["attempt"] == 2
    stale = run_hermes("kanban", "complete", "--json",
                       env={"HERMES_KANBAN_TASK": t, "HERMES_KANBAN_RUN_ID": str(first["run_id"])})
    assert stale.code == 3
    assert stale.err == (f"error: run {first['run_id']} is not the current run of task {t} (run {second['run_id']}); "
                         "complete refused, nothing changed\n")
    assert json.loads(stale.out)["error"]["code"] == "stale_run"
    ok = run_hermes("kanban", "complete", "--summary", "done",
                    env={"HERMES_KANBAN_TASK": t, "HERMES_KANBAN_RUN_ID": str(second["run_id"])})
    assert (ok.code, ok.out, ok.err) == (0, f"{t} done\n", "")
    again = run_hermes("kanban", "claim", t)
    assert again.code == 1 and again.err == f"error: task {t} is done; only ready tasks can be claimed\n"


def test_usage_errors_exit_2_with_one_line() -> None:
    for args, line in (
        (["kanban", "frobnicate"], "error: No such command 'frobnicate'.\n"),
        (["kanban", "create"], "error: Missing argument 'TITLE'.\n"),
        (["kanban", "list", "--sort", "random"],
         "error: Invalid value for '--sort': 'random' is not one of 'priority', 'age', 'newest', 'updated'.\n"),
    ):
        r = run_hermes(*args)
        assert (r.code, r.out, r.err) == (2, "", line)


@pytest.mark.sqlite_only  # a pinned SQLite file
def test_a_text_file_posing_as_a_database_exits_4_untouched(tmp_path: Path) -> None:
    f = tmp_path / "kanban.db"
    f.write_text("not a database\n" * 100)
    before = (f.read_bytes(), f.stat().st_mtime_ns)
    r = run_hermes("kanban", "create", "x", "--json", env={"HERMES_KANBAN_DB": str(f)})
    assert r.code == 4
    assert r.err.startswith(f"error: board database {f} ") and r.err.count("\n") == 1
    assert json.loads(r.out)["error"]["code"] == "corrupt"
    assert "Traceback" not in r.err
    assert (f.read_bytes(), f.stat().st_mtime_ns) == before
    assert not (tmp_path / "kanban.db-wal").exists() and not (tmp_path / "kanban.db-shm").exists()


@pytest.mark.sqlite_only  # a pinned SQLite file
def test_a_directory_as_the_database_exits_4(tmp_path: Path) -> None:
    r = run_hermes("kanban", "list", env={"HERMES_KANBAN_DB": str(tmp_path)})
    assert (r.code, r.out) == (4, "")
    assert r.err == (
        f"error: board database {tmp_path} is a directory, not a file (point HERMES_KANBAN_DB at a .db file)\n"
    )


def test_a_reader_that_closes_the_pipe_early_is_not_an_error() -> None:
    """`hermes kanban list | head -1` on a big board: exit 0, no BrokenPipeError traceback."""
    import subprocess

    with Board.open() as b:
        b.db.write(lambda: [b.create_task(f"task {i:04d} " + "x" * 200) for i in range(800)])  # one transaction
    p = subprocess.run(f"'{HERMES}' kanban list | head -1; echo \"exit=${{PIPESTATUS[0]}}\"", shell=True,
                       executable="/bin/bash", capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("t_") and lines[1] == "exit=0", p
    assert p.stderr == ""


def test_version_and_help() -> None:
    r: Result = run_hermes("--version")
    assert r.code == 0 and r.out.startswith("hermes, version ")
    h = run_hermes("kanban", "--help")
    assert h.code == 0 and "Commands:" in h.out and h.err == ""
