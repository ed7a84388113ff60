"""The write path of issue 12. Checkpoints off the writers' hot path: a writer checkpoints the WAL after its COMMIT,
once it has let the next writer in, and the WAL stays bounded while other writers keep appending beside them.

SQLite's own autocheckpoint ran inside COMMIT, holding the writers' queue (store/write_queue.py) for the whole
checkpoint (two fsyncs at synchronous=FULL) while every other writer waited. And the fenced completion's Task built
from its RETURNING tuple.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.store import connection
from hermes_cli.kanban.store.write_queue import lock_path

pytestmark = pytest.mark.sqlite_only  # the WAL and its checkpoints are SQLite's


class _Watched:
    """Stands in for the APSW connection and notes, at each wal_checkpoint call, whether the writers' queue was
    free (another open file description can take its flock) and whether a transaction was open."""

    def __init__(self, conn: Any, lock: Path) -> None:
        self._conn = conn
        self._lock = lock
        self.checkpoints: list[dict[str, bool]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def wal_checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        fd = os.open(self._lock, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free = True
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                free = False
        finally:
            os.close(fd)
        self.checkpoints.append({"queue_free": free, "in_transaction": bool(self._conn.in_transaction)})
        return self._conn.wal_checkpoint(*args, **kwargs)


def _frames(db: Path) -> int:
    """Frames the WAL file has room for (its size only shrinks at journal_size_limit: a high-water mark)."""
    size = os.path.getsize(f"{db}-wal")
    return max(0, size - 32) // (4096 + 24)


def test_the_checkpoint_runs_after_the_writer_let_the_queue_go(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_KANBAN_SYNCHRONOUS", "normal")  # the disk is not what this test is about
    monkeypatch.setattr(connection, "CHECKPOINT_FRAMES", 200, raising=False)
    db = tmp_path / "board.db"
    board = Board.open(db_path=str(db))
    try:
        board.create_task("first")  # makes the queue's lock file
        watched = _Watched(board.db.conn, lock_path(db))
        board.db.conn = watched  # type: ignore[assignment]
        for i in range(300):  # ~10 frames per claim + complete: several times past the mark
            board.create_task(f"t{i}")
            claim = board.claim(worker="w", ttl=60)
            assert claim is not None
            board.complete(claim.task_id, claim.run_id, summary="ok")
        assert watched.checkpoints, "no checkpoint was made outside COMMIT (SQLite's autocheckpoint inside it only)"
        assert all(c["queue_free"] and not c["in_transaction"] for c in watched.checkpoints), watched.checkpoints
        # the checkpoints let the WAL start over: it never held all ~6000 frames of the run
        assert _frames(db) < 1500, _frames(db)
    finally:
        board.close()


BURNER = r"""
import json, sys
from hermes_cli.kanban import Board
from hermes_cli.kanban.store import connection
connection.CHECKPOINT_FRAMES = 300
connection.CHECKPOINT_BOUND_FRAMES = 600
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
    """Three processes burn one board (one commit per task, ~11 frames each: ~13000 frames in all) with a
    checkpoint mark of 300 frames and a bound of 600: checkpoints outside the queue run beside the others' commits
    and cannot always finish, so the bound (checked inside the queue) is what must keep the WAL from growing."""
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
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
        assert sum(r["done"] for r in results) == n
        assert board.counts().get("done") == n
        # bound + what the other writers may append before each sees the bound (one transaction each) + slack
        assert _frames(db) <= 600 + 3 * 20 + 40, _frames(db)
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
