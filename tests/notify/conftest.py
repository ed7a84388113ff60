"""Helpers for the notification tests: the board, the CLI run in-process (errors rendered by main, as for a user)
and as a real process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hermes_cli.kanban import Board
from hermes_cli.main import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def invoke(*args: str) -> Result:
    """`hermes kanban <args>` in this process; main() always ends in sys.exit with the contract's code."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(["kanban", *args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:
            raise AssertionError("main() returned without sys.exit")
    return Result(code, out.getvalue(), err.getvalue())


def hermes_argv(*args: str) -> list[str]:
    """argv of the real CLI as a separate process (the same interpreter, so the same install)."""
    return [sys.executable, "-m", "hermes_cli.main", "kanban", *args]


def run(*args: str, timeout: float = 60) -> Result:
    p = subprocess.run(hermes_argv(*args), capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    return Result(p.returncode, p.stdout, p.stderr)


def fifos(notify_dir: Path) -> list[str]:
    return sorted(p.name for p in notify_dir.iterdir()) if notify_dir.is_dir() else []


@pytest.fixture
def board(hermes_home: Path) -> Iterator[Board]:
    b = Board.open()
    yield b
    b.close()


def lines_json(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def ids(events: Sequence[Any]) -> list[int]:
    return [e.id if hasattr(e, "id") else e["id"] for e in events]
