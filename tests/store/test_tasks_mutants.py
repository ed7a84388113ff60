"""The run-level SQL of store/tasks.py, one statement at a time: each write touches exactly the run it names, a
closed run stays as it was closed, and the claim/reclaim/retry queries compare the right way. These are the fences
under the Board's own checks; the hand-written SQL mutants of bench/mutation/sql.toml (docs/mutation.md) showed
that no test looked at them directly.
"""

from __future__ import annotations

import time

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.models import Run
from hermes_cli.kanban.store import tasks as sql


def two_runs(board: Board) -> tuple[int, int]:
    """Two open runs of two running tasks (ids in increasing order)."""
    ids = []
    for title in ("first", "second"):
        t, _ = board.create_task(title)
        c = board.claim(t.id, worker=title, ttl=600)
        assert c is not None
        ids.append(c.run_id)
    return ids[0], ids[1]


def run(board: Board, run_id: int) -> Run:
    r = sql.get_run(board.db, run_id)
    assert r is not None
    return r


def test_close_run_closes_only_an_open_run_and_only_that_one(board: Board) -> None:
    first, second = two_runs(board)
    board.db.write(lambda: sql.close_run(board.db, first, "completed", 100.0, "the worker's report", 0))
    board.db.write(lambda: sql.close_run(board.db, first, "crashed", 200.0, "a late exit status", 1))
    r = run(board, first)
    assert (r.outcome, r.ended_at, r.summary, r.exit_code) == ("completed", 100.0, "the worker's report", 0)
    assert run(board, second).ended_at is None
    assert [x.id for x in sql.open_runs(board.db)] == [second]


def test_a_heartbeat_extends_only_its_own_run(board: Board) -> None:
    first, second = two_runs(board)
    before = run(board, second)
    board.db.write(lambda: sql.extend_run_lease(board.db, first, 5.0, 99.0))
    assert (run(board, first).heartbeat_at, run(board, first).lease_expires_at) == (5.0, 99.0)
    assert run(board, second) == before


def test_recording_a_workers_pid_touches_only_its_run(board: Board) -> None:
    first, second = two_runs(board)
    before = run(board, second)
    board.db.write(lambda: sql.set_run_process(board.db, first, 4242, 12.5, "here"))
    r = run(board, first)
    assert (r.pid, r.pid_create_time, r.host) == (4242, 12.5, "here")
    assert run(board, second) == before


def test_the_claim_queue_skips_tasks_waiting_for_their_retry_and_non_ready_ones(board: Board) -> None:
    now = time.time()
    waiting, _ = board.create_task("waiting for its retry", priority=9)
    due, _ = board.create_task("retry due", priority=5)
    blocked, _ = board.create_task("blocked", priority=10)
    board.block(blocked.id, reason="by hand")
    board.db.write(lambda: sql.update_task(board.db, waiting.id, now, retry_at=now + 60))
    board.db.write(lambda: sql.update_task(board.db, due.id, now, retry_at=now - 1))
    assert sql.claimable_task_id(board.db, now) == due.id
    assert sql.claimable_task_id(board.db, now + 61) == waiting.id
    assert board.next_retry_at() == now - 1  # the earliest


def test_only_expired_leases_are_reclaimable(board: Board) -> None:
    live, _ = board.create_task("live")
    lapsed, _ = board.create_task("lapsed")
    assert board.claim(live.id, worker="w", ttl=600) is not None
    assert board.claim(lapsed.id, worker="w", ttl=0.05) is not None
    time.sleep(0.1)
    assert [t.id for t in sql.expired_running(board.db, time.time())] == [lapsed.id]


def test_a_failed_run_says_whether_and_when_it_will_be_retried(board: Board) -> None:
    t, _ = board.create_task("flaky", max_retries=1)
    c = board.claim(t.id, worker="w")
    assert c is not None
    board.finish_run(t.id, c.run_id, "crashed", summary="exited 3", exit_code=3, retry_after=0.12345)
    [ev] = board.events(task_id=t.id, kinds=["crashed"])
    assert (ev.payload["attempt"], ev.payload["will_retry"], ev.payload["retry_in_s"]) == (1, True, 0.123)
    board.db.write(lambda: sql.update_task(board.db, t.id, time.time(), retry_at=None))
    c2 = board.claim(t.id, worker="w")
    assert c2 is not None
    board.finish_run(t.id, c2.run_id, "crashed", summary="exited 3", exit_code=3, retry_after=0.5)
    last = board.events(task_id=t.id, kinds=["crashed"])[-1]
    assert (last.payload["attempt"], last.payload["will_retry"], last.payload["retry_in_s"]) == (2, False, None)
    assert board.get_task(t.id).status == "blocked"


def test_give_up_blocks_at_once_whatever_retries_are_left(board: Board) -> None:
    t, _ = board.create_task("flaky", max_retries=5)
    c = board.claim(t.id, worker="w")
    assert c is not None
    board.finish_run(t.id, c.run_id, "crashed", summary="exited 3", exit_code=3, give_up=True)
    [ev] = board.events(task_id=t.id, kinds=["crashed"])
    assert (ev.payload["will_retry"], ev.payload["retry_in_s"]) == (False, None)
    assert board.get_task(t.id).status == "blocked"


def test_a_repeated_report_of_a_run_that_landed_is_a_no_op_even_after_the_task_moved_on(board: Board) -> None:
    t, _ = board.create_task("x")
    first = board.claim(t.id, worker="w")
    assert first is not None
    board.block(t.id, first.run_id, reason="needs a key")
    board.unblock(t.id)
    second = board.claim(t.id, worker="w")
    assert second is not None
    n = len(board.events())
    again = board.block(t.id, first.run_id, reason="needs a key")  # the first worker's retry of its own report
    assert again.status == "running" and again.current_run_id == second.run_id
    assert len(board.events()) == n  # nothing written


def test_a_block_reason_is_trimmed_and_a_blank_one_is_none(board: Board) -> None:
    t, _ = board.create_task("x")
    c = board.claim(t.id, worker="w")
    assert c is not None
    board.block(t.id, c.run_id, reason="  needs a key \n")
    board.unblock(t.id)
    board.block(t.id, reason="   ")
    first, second = board.events(task_id=t.id, kinds=["blocked"])
    assert (first.payload["reason"], second.payload["reason"]) == ("needs a key", None)
    assert board.detail(t.id).runs[0].summary == "needs a key"


def test_a_forced_completion_says_so_in_its_event(board: Board) -> None:
    forced, _ = board.create_task("by hand")
    plain, _ = board.create_task("by its worker")
    c = board.claim(plain.id, worker="w")
    assert c is not None
    board.complete(forced.id, summary="done by hand", force=True)
    board.complete(plain.id, c.run_id, summary="done")
    [f] = board.events(task_id=forced.id, kinds=["completed"])
    [p] = board.events(task_id=plain.id, kinds=["completed"])
    assert f.payload.get("forced") is True and p.payload.get("forced") is None
