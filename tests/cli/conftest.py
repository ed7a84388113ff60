"""CLI test helpers: run `hermes` in-process through `hermes_cli.main.main` (where errors are rendered, so exit codes
and `error:` lines are the real ones), or as the installed console script in a subprocess; dump a board file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hermes_cli.kanban import Board
from hermes_cli.main import main

from ..boarddump import dump_board as dump_db  # noqa: F401  (re-exported to the cli tests)
from ..boarddump import dump_pg_boards

#: the console script installed next to this interpreter (pip install puts them in one bin/)
HERMES = str(Path(sys.executable).with_name("hermes"))


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error_line(self) -> str:
        """The one line a failure prints on stderr."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        return lines[0]


def invoke(argv: Sequence[str], stdin: str | None = None) -> Result:
    """`hermes <argv>` in this process. main() always ends in sys.exit, which carries the exit code."""
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(list(argv))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            else:
                raise AssertionError("main() returned without sys.exit")
    finally:
        sys.stdin = old_stdin
    return Result(code, out.getvalue(), err.getvalue())


Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def _both_engines(engine: str) -> str:
    """Every CLI test runs on both engines (the contract is the same), unless marked `sqlite_only` (a test of
    SQLite itself: its files, locks, pragmas)."""
    return engine


@pytest.fixture
def cli() -> Cli:
    """`cli("create", "x", "--json")` runs `hermes kanban create x --json` in-process."""
    return lambda *args, stdin=None: invoke(["kanban", *args], stdin=stdin)


def run_hermes(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
               timeout: float = 60) -> Result:
    """The real console script in a subprocess (environment inherited, HERMES_HOME from the autouse fixture)."""
    p = subprocess.run([HERMES, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def hermes() -> Callable[..., Result]:
    return run_hermes


def dump_home(home: Path) -> dict[str, Any]:
    """Every board under a HERMES_HOME: which exist, and all of their rows."""
    boards = home / "kanban" / "boards"
    url = os.environ.get("HERMES_KANBAN_URL")
    if url:  # every board lives in that PostgreSQL database: its schemas, and which board directories exist here
        local = sorted(p.name for p in boards.iterdir() if p.is_dir()) if boards.is_dir() else []
        return {"__dirs__": local, **dump_pg_boards(url)}
    if not boards.is_dir():
        return {}
    return {
        p.name: dump_db(p / "kanban.db") if (p / "kanban.db").exists() else None
        for p in sorted(boards.iterdir())
        if p.is_dir()
    }


@pytest.fixture
def board(hermes_home: Path) -> Iterator[Board]:
    """The default board, opened through the API (for arranging state quickly)."""
    b = Board.open()
    yield b
    b.close()


@pytest.fixture
def home_dump(hermes_home: Path) -> Callable[[], dict[str, Any]]:
    return lambda: dump_home(hermes_home)
