"""Factories for the store contract suite: an open board, tasks in any status, and a full dump of a board file.

`dump_board(path)` reads every table through its own read-only APSW connection, so "the board did not change" is
checked against what is on disk, not against what the Board object believes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hermes_cli.kanban import Board, Task

from ..boarddump import dump_board  # noqa: F401  (re-exported to the store tests)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def board(engine: str) -> Iterator[Board]:
    """An open board, on each engine in turn (the store contract holds on both)."""
    b = Board.open()
    yield b
    b.close()


@pytest.fixture
def dump() -> Callable[[Board], dict[str, Any]]:
    return lambda b: dump_board(b.paths.db)


MakeTask = Callable[..., Task]


@pytest.fixture
def make_task(board: Board) -> MakeTask:
    """`make_task(status="review", title=..., **create_kwargs)`: a task driven to `status` through the public API."""
    counter = iter(range(1, 1_000_000))

    def make(status: str = "ready", title: str | None = None, **kwargs: Any) -> Task:
        title = title or f"{status} task {next(counter)}"
        if status == "todo":
            parent, _ = board.create_task(f"parent of {title}")
            kwargs["parents"] = [*kwargs.get("parents", ()), parent.id]
        if status == "review":
            kwargs["review"] = True
        if status == "triage":
            kwargs["triage"] = True
        task, created = board.create_task(title, **kwargs)
        assert created
        if status in ("running", "review"):
            claim = board.claim(task.id, worker="factory")
            assert claim is not None
            if status == "review":
                board.complete(task.id, claim.run_id, summary="ready for review")
        elif status == "blocked":
            board.block(task.id, reason="factory")
        elif status == "done":
            board.complete(task.id, summary="factory")
        elif status == "archived":
            board.archive(task.id)
        got = board.get_task(task.id)
        assert got.status == status, (got.status, status)
        return got

    return make


#: a process that holds the board's write lock (BEGIN IMMEDIATE) until told to let go on stdin
LOCK_HOLDER = r"""
import sys, apsw
conn = apsw.Connection(sys.argv[1], flags=apsw.SQLITE_OPEN_READWRITE)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def lock_holder():
    """Start a real process holding the write lock of a board file; `.release()` commits it; stopped at teardown."""
    import subprocess

    procs: list[subprocess.Popen[str]] = []

    class Holder:
        def __init__(self, db: Path) -> None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LOCK_HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(self.proc)
            assert self.proc.stdout is not None
            assert self.proc.stdout.readline().strip() == "locked"

        def release(self) -> None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            assert self.proc.stdout.readline().strip() == "released"

    yield Holder
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()
