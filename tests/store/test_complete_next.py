"""Board.complete_next: complete a task and claim the next ready one in ONE transaction, fenced exactly like
`complete(task, run)` followed by `claim()`.

Checked against the two separate calls: a stale run changes nothing and claims nothing; the claim it returns is a
real claim (run row, lease, `claimed` event, attempt); both events are written; a repeated completion still claims;
nothing ready leaves the completion standing and the board otherwise as it was; and the whole thing is one commit.
The multi-process exactly-once check is in tests/test_concurrency_next.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from hermes_cli.kanban import Board, StaleRun, TaskStatus

from .conftest import MakeTask


def test_completes_and_returns_a_proper_claim_of_the_next_ready_task(board: Board, make_task: MakeTask) -> None:
    first, _ = board.create_task("first", priority=5)
    second, _ = board.create_task("second", priority=1)
    c1 = board.claim(worker="w")
    assert c1 is not None and c1.task_id == first.id
    before = board.last_event_id()

    t0 = time.time()
    done, nxt = board.complete_next(first.id, c1.run_id, summary="ok", worker="w2", ttl=90)

    assert done.id == first.id and done.status == TaskStatus.DONE and done.summary == "ok"
    assert nxt is not None and nxt.task_id == second.id and nxt.attempt == 1 and nxt.run_id != c1.run_id
    assert t0 + 90 <= nxt.lease_expires_at <= time.time() + 90
    task = board.get_task(second.id)
    assert task.status == TaskStatus.RUNNING and task.current_run_id == nxt.run_id and task.attempts == 1
    assert task.lease_expires_at == nxt.lease_expires_at
    (run,) = board.detail(second.id).runs
    assert run.id == nxt.run_id and run.worker == "w2" and run.is_open and run.lease_expires_at == nxt.lease_expires_at
    closed = [r for r in board.detail(first.id).runs if r.id == c1.run_id]
    assert closed[0].outcome == "completed" and not closed[0].is_open
    events = board.events(before)
    assert [(e.kind, e.task_id, e.run_id) for e in events] == [
        ("completed", first.id, c1.run_id), ("claimed", second.id, nxt.run_id),
    ]
    assert events[1].payload["attempt"] == 1 and events[1].payload["worker"] == "w2"
    # the next claim is fenced like any other: its run id completes it, the old one does not
    with pytest.raises(StaleRun):
        board.complete(second.id, c1.run_id)
    assert board.complete(second.id, nxt.run_id).status == TaskStatus.DONE


@pytest.mark.sqlite_only  # APSW's statement trace; on PostgreSQL the same Database.write runs it (one BEGIN)
def test_one_transaction_one_commit(board: Board) -> None:
    a, _ = board.create_task("a")
    board.create_task("b")
    c = board.claim(worker="w")
    assert c is not None
    seen: list[str] = []
    board.db.conn.exec_trace = lambda _cur, sql, _b: seen.append(sql.strip().split()[0].upper()) or True
    try:
        board.complete_next(a.id, c.run_id, worker="w")
    finally:
        board.db.conn.exec_trace = None
    assert seen.count("BEGIN") == 1 and seen.count("COMMIT") == 1


def test_a_stale_run_completes_nothing_and_claims_nothing(
    board: Board, make_task: MakeTask, dump: Callable[[Board], dict[str, Any]]
) -> None:
    task, _ = board.create_task("taken over")
    board.create_task("waiting")
    old = board.claim(task.id, worker="w", ttl=0.01)
    assert old is not None
    time.sleep(0.05)
    new = board.claim(task.id, worker="w2")  # takes over the expired lease: `old` is stale now
    assert new is not None
    before = dump(board)
    with pytest.raises(StaleRun) as err:
        board.complete_next(task.id, old.run_id, worker="w")
    assert err.value.exit_code == 3
    assert "complete refused, nothing changed" in err.value.message
    assert dump(board) == before


def test_nothing_ready_keeps_the_completion_and_claims_nothing(
    board: Board, dump: Callable[[Board], dict[str, Any]]
) -> None:
    only, _ = board.create_task("only")
    c = board.claim(worker="w")
    assert c is not None
    done, nxt = board.complete_next(only.id, c.run_id, worker="w")
    assert nxt is None and done.status == TaskStatus.DONE
    assert board.counts()["done"] == 1 and board.counts()["running"] == 0
    assert [e.kind for e in board.events(0)][-1] == "completed"


def test_nothing_ready_undoes_the_reclaims_like_an_empty_claim(board: Board) -> None:
    """claim() that finds nothing rolls its reclaims back; complete_next keeps its completion but not those."""
    mine, _ = board.create_task("mine")
    other, _ = board.create_task("expired elsewhere", max_retries=0)
    c = board.claim(mine.id, worker="w")
    e = board.claim(other.id, worker="gone", ttl=0.01)
    assert c is not None and e is not None
    time.sleep(0.05)
    # max_retries=0: reclaiming `other` would block it (no retry), so nothing becomes ready
    done, nxt = board.complete_next(mine.id, c.run_id, worker="w")
    assert done.status == TaskStatus.DONE and nxt is None
    still = board.get_task(other.id)
    assert still.status == TaskStatus.RUNNING and still.current_run_id == e.run_id
    assert [ev.kind for ev in board.events(0)][-1] == "completed"


def test_expired_leases_are_reclaimed_first_as_claim_does(board: Board) -> None:
    mine, _ = board.create_task("mine")
    other, _ = board.create_task("expired elsewhere")
    c = board.claim(mine.id, worker="w")
    e = board.claim(other.id, worker="gone", ttl=0.01)
    assert c is not None and e is not None
    time.sleep(0.05)
    done, nxt = board.complete_next(mine.id, c.run_id, worker="w")
    assert nxt is not None and nxt.task_id == other.id and nxt.attempt == 2
    kinds = [(ev.kind, ev.run_id) for ev in board.events(0)][-3:]
    assert kinds == [("completed", c.run_id), ("reclaimed", e.run_id), ("claimed", nxt.run_id)]


def test_a_repeated_completion_is_a_no_op_that_still_claims(board: Board) -> None:
    a, _ = board.create_task("a", priority=9)
    b, _ = board.create_task("b")
    c = board.claim(worker="w")
    assert c is not None and c.task_id == a.id
    board.complete(a.id, c.run_id, summary="first")
    done, nxt = board.complete_next(a.id, c.run_id, summary="again", worker="w")
    assert done.summary == "first"  # the first completion stands
    assert nxt is not None and nxt.task_id == b.id


def test_review_gated_task_goes_to_review_and_the_next_is_claimed(board: Board) -> None:
    gated, _ = board.create_task("gated", review=True, priority=9)
    b, _ = board.create_task("b")
    c = board.claim(worker="w")
    assert c is not None and c.task_id == gated.id
    done, nxt = board.complete_next(gated.id, c.run_id, worker="w")
    assert done.status == TaskStatus.REVIEW
    assert nxt is not None and nxt.task_id == b.id


def test_children_are_promoted_and_can_be_the_next_claim(board: Board) -> None:
    parent, _ = board.create_task("parent")
    child, _ = board.create_task("child", parents=[parent.id])
    c = board.claim(worker="w")
    assert c is not None and c.task_id == parent.id
    _, nxt = board.complete_next(parent.id, c.run_id, worker="w")
    assert nxt is not None and nxt.task_id == child.id


def test_tenant_limits_the_next_claim(board: Board) -> None:
    a, _ = board.create_task("a", tenant="x")
    board.create_task("other tenant", tenant="y", priority=9)
    b, _ = board.create_task("b", tenant="x")
    c = board.claim(a.id, worker="w")
    assert c is not None
    _, nxt = board.complete_next(a.id, c.run_id, worker="w", tenant="x")
    assert nxt is not None and nxt.task_id == b.id


def test_bad_input_is_refused_before_the_board_is_touched(
    board: Board, dump: Callable[[Board], dict[str, Any]]
) -> None:
    a, _ = board.create_task("a")
    c = board.claim(worker="w")
    assert c is not None
    before = dump(board)
    for kwargs in ({"ttl": "soon"}, {"ttl": -1}):
        with pytest.raises(Exception) as err:
            board.complete_next(a.id, c.run_id, worker="w", **kwargs)  # type: ignore[arg-type]
        assert getattr(err.value, "exit_code", None) == 1
    assert dump(board) == before
