"""Assignee profiles (`[profiles.<name>] command` in the board's config.toml): a task assigned to a profile runs that
profile's command; a task whose assignee has none is never spawned wrong, only noted once (`skipped_nonspawnable`)
and left ready for pull workers. Real dispatcher processes and workers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hermes_cli.kanban import Board, TaskStatus

from .conftest import FAST, HERMES, pycmd

#: a worker that writes its profile and its argv into the file named by its first argument
REPORT = "import json,os,sys\nopen(sys.argv[1],'w').write(json.dumps([os.environ.get('HERMES_PROFILE'),sys.argv[2:]]))"


def hermes(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERMES, "kanban", *args], capture_output=True, text=True, timeout=60)


def write_config(board: Board, text: str, **dispatch: str) -> None:
    lines = ["[dispatch]", *(f"{k} = {json.dumps(v)}" for k, v in {**FAST, "backup_interval": "off",
                                                                   **dispatch}.items())]
    board.paths.config_file.write_text("\n".join(lines) + "\n" + text, encoding="utf-8")


def test_an_assignee_runs_its_profile_command_and_a_task_command_still_wins(board: Board, tmp_path: Path) -> None:
    out_profile, out_own = tmp_path / "profile.json", tmp_path / "own.json"
    cmd = pycmd(REPORT, str(out_profile), "researcher", "{task_id}")
    write_config(board, f"[profiles.researcher]\ncommand = {json.dumps(cmd)}\n")
    t, _ = board.create_task("find sources", assignee="researcher")
    own, _ = board.create_task("own command", assignee="researcher", command=pycmd(REPORT, str(out_own), "own"))
    p = hermes("dispatch", "--until-idle", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["completed"] == 2
    assert json.loads(out_profile.read_text()) == ["researcher", ["researcher", t.id]]
    assert json.loads(out_own.read_text()) == ["researcher", ["own"]]
    assert board.get_task(t.id).status == TaskStatus.DONE and board.get_task(own.id).status == TaskStatus.DONE


def test_an_assignee_without_a_command_is_skipped_once_and_left_for_pull_workers(board: Board,
                                                                                 tmp_path: Path) -> None:
    marker = tmp_path / "default-ran"
    # The board's default command is for unassigned tasks: it must never run a `writer` task.
    write_config(board, '[profiles.researcher]\ncommand = "true"\n',
                 default_command=pycmd("open(__import__('sys').argv[1],'w')", str(marker)))
    t, _ = board.create_task("write it up", assignee="writer")
    plan = json.loads(hermes("dispatch", "--dry-run", "--json").stdout)
    assert plan["would_start"] == [] and [k["task_id"] for k in plan["would_skip"]] == [t.id]
    for _ in range(2):  # two passes, as cron would run them: one event, not one per pass
        p = hermes("dispatch", "--json")
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["spawned"] == 0
        assert [k["task_id"] for k in out["skipped_nonspawnable"]] == [t.id]
    notes = board.events(task_id=t.id, kinds=["skipped_nonspawnable"])
    assert len(notes) == 1
    assert notes[0].payload["assignee"] == "writer"
    assert "add [profiles.writer] command" in notes[0].payload["reason"]
    assert not marker.exists()
    assert board.get_task(t.id).status == TaskStatus.READY
    claim = board.claim(t.id, worker="a pull worker")  # still there for pull workers
    assert claim is not None


def test_a_bad_profile_table_is_refused_with_the_file_named(board: Board) -> None:
    path = board.paths.config_file
    for text, message in (
        ('[profiles.researcher]\ncmd = "x"\n', "unknown setting profiles.researcher.cmd (known: command, max_running)"),
        ('[profiles.researcher]\ncommand = 3\n', "profiles.researcher.command must be a string"),
        ('[profiles."bad name"]\ncommand = "x"\n', "[profiles.bad name]: invalid profile name 'bad name'"),
        ('[profiles.researcher]\nmax_running = 0\n', "profiles.researcher.max_running must be an integer from 1"),
        ('[profiles.researcher]\nmax_running = "2"\n', "profiles.researcher.max_running must be an integer from 1"),
    ):
        write_config(board, text)
        board.create_task("x", assignee="researcher")
        before = board.last_event_id()
        p = hermes("dispatch")
        assert p.returncode == 1
        assert p.stderr.startswith(f"error: config {path}: {message}"), p.stderr
        assert board.last_event_id() == before
