"""Board selection and worker-environment edge cases found in review: each once lost a worker's report or made a
board nobody asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from hermes_cli.kanban import Board

from .conftest import Cli


def test_a_worker_blocks_its_own_task_with_just_a_reason(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hermes kanban block "needs an API key"` inside a worker: the task and run come from the environment."""
    with Board.open() as b:
        task, _ = b.create_task("needs a key")
        claim = b.claim(task.id)
    assert claim is not None
    monkeypatch.setenv("HERMES_KANBAN_TASK", task.id)
    monkeypatch.setenv("HERMES_KANBAN_RUN_ID", str(claim.run_id))
    r = cli("block", "needs an API key", "--json")
    assert r.code == 0, r
    assert r.json()["status"] == "blocked"
    with Board.open() as b:
        run = b.detail(task.id).runs[-1]
    assert (run.outcome, run.summary) == ("blocked", "needs an API key")


def test_the_reason_is_given_once(cli: Cli) -> None:
    with Board.open() as b:
        task, _ = b.create_task("x")
    r = cli("block", task.id, "one", "--reason", "two")
    assert (r.code, r.error_line) == (1, "error: give the reason once: as an argument or with --reason, not both")


def test_a_misspelt_board_from_the_environment_is_not_created(cli: Cli, monkeypatch, hermes_home: Path) -> None:
    monkeypatch.setenv("HERMES_KANBAN_BOARD", "typo")
    r = cli("list")
    assert (r.code, r.error_line) == (1, "error: board typo does not exist (see: hermes kanban boards create typo)")
    assert not (hermes_home / "kanban" / "boards" / "typo").exists()


@pytest.mark.sqlite_only  # SQLite's busy timeout
def test_a_bad_busy_timeout_creates_nothing(cli: Cli, monkeypatch, hermes_home: Path) -> None:
    monkeypatch.setenv("HERMES_KANBAN_BUSY_TIMEOUT_MS", "abc")
    r = cli("create", "x")
    assert (r.code, r.error_line) == (
        1, "error: HERMES_KANBAN_BUSY_TIMEOUT_MS='abc' is not a number of milliseconds in 1..600000")
    assert not (hermes_home / "kanban" / "boards" / "default" / "kanban.db").exists()


def test_a_nul_byte_in_a_command_is_refused(cli: Cli) -> None:
    r = cli("create", "x", "--command", "echo a\x00b")
    assert (r.code, r.error_line) == (1, "error: invalid --command: it contains a NUL byte")


def test_a_relative_hermes_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers run with their workspace as cwd and get HERMES_KANBAN_DB from the board's paths: those must be
    absolute, or the worker's `complete` would open (and create) a stray board inside its workspace."""
    from hermes_cli.kanban.core.paths import resolve

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HERMES_HOME", "rel-home")
    assert resolve().db == tmp_path / "rel-home" / "kanban" / "boards" / "default" / "kanban.db"
