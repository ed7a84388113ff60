"""The write path of issue 12: the WAL stays bounded while several writers burn a board, and the fenced completion's
Task is built from its RETURNING tuple in Task's field order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_cli.kanban import Board

from ..startgate import release_together

pytestmark = pytest.mark.sqlite_only  # the WAL and its checkpoints are SQLite's


def _frames(db: Path) -> int:
    """Frames the WAL file has room for (its size only shrinks at journal_size_limit: a high-water mark)."""
    size = os.path.getsize(f"{db}-wal")
    return max(0, size - 32) // (4096 + 24)


BURNER = r"""
import json, sys
from hermes_cli.kanban import Board
b = Board.open(db_path=sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
done, claim = 0, b.claim(worker="w", ttl=60)
while claim is not None:
    _, claim = b.complete_next(claim.task_id, claim.run_id, summary="ok", worker="w", ttl=60)
    done += 1
print(json.dumps({"done": done}), flush=True)
"""


def test_the_wal_stays_bounded_while_writers_append_beside_checkpoints(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Three processes burn one board (one commit per task, ~11 frames each: ~13000 frames in all): the WAL file
    (its size is a high-water mark) never outgrows SQLite's autocheckpoint mark (1000 frames) by more than a few
    transactions. A guard for any change to checkpointing: issue 12 tried checkpoints outside the writers' queue,
    which cannot finish while other writers append, so the WAL stopped starting over (docs/performance.md)."""
    monkeypatch.setenv("HERMES_KANBAN_SYNCHRONOUS", "normal")
    db = tmp_path / "board.db"
    board = Board.open(db_path=str(db))  # open throughout: the last connection's close would delete the WAL
    n = 1200
    procs: list[subprocess.Popen[str]] = []
    try:
        board.db.write(lambda: [board.create_task(f"t{i}") for i in range(n)])
        board.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        procs = [subprocess.Popen([sys.executable, "-c", BURNER, str(db)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=dict(os.environ)) for _ in range(3)]
        release_together(procs)
        results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
        assert sum(r["done"] for r in results) == n
        assert board.counts().get("done") == n
        # bound + what the other writers may append before each sees the bound (one transaction each) + slack
        assert _frames(db) <= 1000 + 3 * 20 + 40, _frames(db)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=30)
        board.close()


def test_task_columns_are_the_task_fields_in_order() -> None:
    """The fenced completion builds its Task from the RETURNING tuple positionally (store/tasks.py)."""
    from dataclasses import fields

    from hermes_cli.kanban.core.models import Task
    from hermes_cli.kanban.store.tasks import TASK_COLUMNS

    assert [c.strip() for c in TASK_COLUMNS.split(",")] == [f.name for f in fields(Task)]
