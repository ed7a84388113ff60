"""The doorbell rings after COMMIT, once per write that wrote events, for every write path a Board has; a write
that rolls back or writes no event does not ring. (The store never rings itself: Board.open installs the ring as
the Database's after-commit hook, docs/architecture.md.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.errors import HermesError
from hermes_cli.kanban.live import doorbell


@pytest.fixture
def rings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    real = doorbell.ring
    board_holder: dict[str, Board] = {}

    def spy(notify_dir: Path) -> int:
        board = board_holder["board"]
        # Another connection sees the newest event only once the writer's COMMIT is done.
        other = apsw.Connection(str(board.paths.db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            newest = other.execute("SELECT max(id) FROM events").fetchall()[0][0]
        finally:
            other.close()
        seen.append({"dir": notify_dir, "in_tx": board.db.conn.in_transaction, "newest": newest})
        return real(notify_dir)

    monkeypatch.setattr(doorbell, "ring", spy)
    board = Board.open(db_path=str(tmp_path / "b" / "kanban.db"))
    board_holder["board"] = board
    seen.clear()  # creating the board may write events; count from here
    seen.append({"board": board})
    return seen


def _board(rings: list[dict[str, Any]]) -> Board:
    board = rings.pop(0)["board"]
    assert isinstance(board, Board)
    return board


def _check_one_ring_after_commit(board: Board, rings: list[dict[str, Any]], before: int) -> None:
    assert len(rings) == before + 1, rings
    ring = rings[-1]
    assert ring["in_tx"] is False
    assert ring["dir"] == board.paths.notify_dir
    assert ring["newest"] == board.last_event_id()


def test_every_write_path_rings_once_after_commit(rings: list[dict[str, Any]]) -> None:
    board = _board(rings)
    parent, _ = board.create_task("parent")
    _check_one_ring_after_commit(board, rings, 0)
    child, _ = board.create_task("child", parents=[parent.id])
    _check_one_ring_after_commit(board, rings, 1)
    board.comment(parent.id, "hello")
    _check_one_ring_after_commit(board, rings, 2)
    claim = board.claim(worker="w")
    assert claim is not None
    _check_one_ring_after_commit(board, rings, 3)
    board.complete(claim.task_id, claim.run_id, summary="ok")
    _check_one_ring_after_commit(board, rings, 4)
    board.block(child.id, reason="waiting", force=True)
    _check_one_ring_after_commit(board, rings, 5)
    board.unblock(child.id)
    _check_one_ring_after_commit(board, rings, 6)
    board.archive(child.id)
    _check_one_ring_after_commit(board, rings, 7)


def test_a_rolled_back_write_does_not_ring(rings: list[dict[str, Any]]) -> None:
    board = _board(rings)
    task, _ = board.create_task("one")
    n = len(rings)
    with pytest.raises(HermesError):
        board.complete(task.id, 999_999)  # a stale run: refused, rolled back
    assert len(rings) == n


def test_a_write_without_events_does_not_ring(rings: list[dict[str, Any]]) -> None:
    board = _board(rings)
    board.create_task("one")
    n = len(rings)
    board.db.write(lambda: board.db.execute("UPDATE tasks SET updated_at = updated_at"))
    assert len(rings) == n
