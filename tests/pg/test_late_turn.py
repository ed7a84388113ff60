"""A worker's fenced completion on a PostgreSQL board takes the writers' turn only to commit (PgDatabase.write with
late_turn): what it decided before the turn must still hold under it, and a writer in the turn that wants its row
must not wedge the board. Each test stops a real completion between its UPDATE and its COMMIT (a second connection,
a second Board, a real server) and lets another writer act in that gap."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.errors import StaleRun
from hermes_cli.kanban.store.pg.database import PgDatabase


class PausedCompletion:
    """`board.complete(task, run)` in a thread, stopped just before its commit batch (the one that takes the turn)
    until release() is called. The first attempt only: a write run again goes straight through."""

    def __init__(self, board: Board, task_id: str, run_id: int) -> None:
        db = board.db
        assert isinstance(db, PgDatabase)
        self.at_commit = threading.Event()
        self.go = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.late_turns: list[bool] = []
        commit: Callable[[], bool] = db._commit_and_end_turn

        def paused() -> bool:
            self.late_turns.append(db._late)
            if len(self.late_turns) == 1:
                self.at_commit.set()
                assert self.go.wait(30), "never released"
            return commit()

        db._commit_and_end_turn = paused  # type: ignore[method-assign]

        def run() -> None:
            try:
                self.result = board.complete(task_id, run_id, summary="done by the worker")
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.at_commit.wait(30), "the completion never reached its commit"

    def release(self) -> None:
        self.go.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


def test_a_child_created_while_its_parent_completes_is_promoted(pg_url: str) -> None:
    """The completion saw no children; before it got the turn, another writer created a child of the task (and
    saw the parent still running, so the child waits as todo). Under the turn the completion must notice the
    child and promote it: otherwise the child waits forever for a parent that is done."""
    with Board.open() as worker, Board.open() as person:
        parent, _ = person.create_task("parent")
        claim = worker.claim(worker="w")
        assert claim is not None and claim.task_id == parent.id
        completing = PausedCompletion(worker, parent.id, claim.run_id)
        assert completing.late_turns == [True]
        child, _ = person.create_task("child", parents=[parent.id])  # commits while the completion waits
        assert child.status == "todo"
        completing.release()
        assert completing.error is None
        assert completing.late_turns == [True, False], "the completion was not run again with the turn first"
        assert person.get_task(parent.id).status == "done"
        assert person.get_task(child.id).status == "ready"
        promoted = [e for e in person.events(task_id=child.id) if e.kind == "promoted"]
        assert len(promoted) == 1


def test_a_reclaim_meeting_a_late_completion_ends_with_one_outcome(pg_url: str) -> None:
    """A claimer in the turn reclaims the completing task's expired lease and waits for the row the completion
    holds; the completion waits for the turn: PostgreSQL's deadlock detector ends one of them, which runs again.
    Either the completion landed (and nothing was reclaimed) or the reclaim did (and the report is refused): never
    both, never a task left running or a run left open."""
    with Board.open() as worker, Board.open() as other:
        task, _ = other.create_task("contested")
        claim = worker.claim(worker="slow", ttl=0.2)
        assert claim is not None
        threading.Event().wait(0.4)  # the lease has expired; the worker completes anyway
        completing = PausedCompletion(worker, task.id, claim.run_id)
        reclaiming: dict[str, Any] = {}

        def reclaim() -> None:
            try:
                reclaiming["claim"] = other.claim(worker="fresh")
            except BaseException as exc:
                reclaiming["error"] = exc

        claimer = threading.Thread(target=reclaim)
        claimer.start()
        claimer.join(0.5)  # it blocks on the completion's row lock, holding the turn
        completing.release()
        claimer.join(60)
        assert "error" not in reclaiming, reclaiming
        final = other.get_task(task.id)
        runs = other.runs(task.id)
        assert [r for r in runs if r.ended_at is None] == ([] if final.status == "done" else
                                                             [r for r in runs if r.id == final.current_run_id])
        if completing.error is None:
            assert final.status == "done" and reclaiming["claim"] is None
            assert [r.outcome for r in runs] == ["completed"]
        else:
            assert isinstance(completing.error, StaleRun), completing.error
            assert final.status == "running" and reclaiming["claim"].task_id == task.id
            assert [r.outcome for r in runs][:1] == ["reclaimed"]


@pytest.mark.parametrize("children", [0, 1])
def test_a_late_completion_writes_what_the_turn_first_one_does(pg_url: str, children: int) -> None:
    """The same rows and events either way: the fast path with the late turn, or (a task with children) the
    write run again with the turn first."""
    with Board.open() as board:
        parent, _ = board.create_task("parent")
        kids = [board.create_task(f"child {i}", parents=[parent.id])[0] for i in range(children)]
        claim = board.claim(worker="w")
        assert claim is not None and claim.task_id == parent.id
        done = board.complete(parent.id, claim.run_id, summary="ok")
        assert done.status == "done" and done.summary == "ok"
        assert [r.outcome for r in board.runs(parent.id)] == ["completed"]
        kinds = [e.kind for e in board.events(task_id=parent.id)]
        assert kinds[-1] == "completed" and kinds.count("completed") == 1
        assert [board.get_task(k.id).status for k in kids] == ["ready"] * children
        ids = [e.id for e in board.events()]
        assert ids == sorted(ids)
