"""The local side of a sync: the board's stable id, batches read from the outbox (its `events` table), and the
local checkpoint.

Why the event log is the outbox (and no `sync_queue` table): every change already writes its event in the same
transaction as the change, with an id that grows in commit order. "Everything after the last acknowledged id" is
then exactly what the hub lacks; a second table would duplicate every event in every write transaction (more I/O
on the write path) for nothing the log does not already give, and gc keeps the log's unacknowledged tail (hub
checkpoints are a floor of `gc`, like subscriptions' cursors).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ..domain.board import Board
from ..store import sync as sync_sql
from ..store import tasks as tasks_sql
from ..store.engine import wait_durable


def board_id(board: Board) -> str:
    """The board's stable id (generated once, kept in its `meta`): how the hub tells boards of many hosts apart."""
    found = sync_sql.board_id(board.db)
    if found:
        return found

    def tx() -> str:
        current = sync_sql.board_id(board.db)
        if current:
            return current  # another process made it meanwhile
        new = uuid.uuid4().hex
        sync_sql.set_board_id(board.db, new)
        return new

    return board.db.write(tx)


def register_hub(board: Board, hub: str) -> int:
    """Make sure the board has a checkpoint for `hub` (0 at first), so gc keeps every event from now on even if the
    hub is never reached. Returns the local checkpoint."""
    found = sync_sql.checkpoint(board.db, hub)
    if found is not None:
        return found

    def tx() -> int:
        current = sync_sql.checkpoint(board.db, hub)
        if current is None:
            sync_sql.set_checkpoint(board.db, hub, 0)
            return 0
        return current

    return board.db.write(tx)


def write_checkpoint(board: Board, hub: str, acked: int) -> None:
    board.db.write(lambda: sync_sql.set_checkpoint(board.db, hub, acked))


@dataclass(frozen=True, slots=True)
class Batch:
    events: list[dict[str, Any]]
    tasks: list[dict[str, Any]]  #: current rows of the tasks the events touch
    deleted: list[str]  #: tasks the events touch that no longer exist
    as_of: int  #: the newest event id the task rows reflect

    @property
    def last(self) -> int:
        return int(self.events[-1]["id"]) if self.events else 0


def read(board: Board, after: int, limit: int) -> Batch:
    events, tasks, as_of = sync_sql.read_batch(board.db, after, limit)
    # never ahead of the board: what the hub is sent must survive a crash of the board's server (store.engine);
    # an empty batch sends nothing, so an idle `sync --follow` does not commit (and fsync) on every poll
    if events:
        wait_durable(board.db)
    touched = {e["task_id"] for e in events if e["task_id"] is not None}
    deleted = sorted(touched - {t["id"] for t in tasks})
    return Batch(events, tasks, deleted, as_of)


def all_tasks(board: Board, limit: int) -> tuple[list[list[dict[str, Any]]], int]:
    """Every task, in chunks of `limit`, and the event id they reflect (one snapshot)."""
    chunks: list[list[dict[str, Any]]] = []
    with board.db.read():
        as_of = tasks_sql.last_event_id(board.db)
        last = ""
        while True:
            chunk = sync_sql.all_tasks(board.db, last, limit)
            if not chunk:
                break
            chunks.append(chunk)
            last = chunk[-1]["id"]
    if chunks:
        wait_durable(board.db)  # as in read()
    return chunks, as_of
