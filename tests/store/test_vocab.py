"""The hermes-agent vocabulary in the Board API: assignees, reclaim, typed blocks, results handed to children,
several ids in one transaction, promote, edit, hard delete, gc, diagnostics and context.

Every refusal is checked against the board file (dump): a refused call changes nothing.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from hermes_cli.kanban import (
    AlreadyClaimed,
    Board,
    HermesError,
    InvalidTransition,
    InvalidValue,
    StaleRun,
    TaskStatus,
)

from .conftest import MakeTask, dump_board


def refused(board: Board, call: Any, error: type[HermesError], message: str | None = None) -> HermesError:
    before = dump_board(board.paths.db)
    with pytest.raises(error) as err:
        call()
    assert dump_board(board.paths.db) == before
    if message is not None:
        assert err.value.message == message
    return err.value


# -- assignees ---------------------------------------------------------------------------------------------------------
def test_create_stores_assignee_creator_skills_and_lists_by_assignee(board: Board) -> None:
    a, _ = board.create_task("research", assignee="researcher", created_by="ana", skills=["web", "web", "pdf"])
    b, _ = board.create_task("write", assignee="writer")
    c, _ = board.create_task("nobody's")
    assert (a.assignee, a.created_by, a.skills) == ("researcher", "ana", ("web", "pdf"))
    assert a.as_dict()["skills"] == ["web", "pdf"]
    assert [t.id for t in board.list_tasks(assignee="researcher")] == [a.id]
    assert [t.id for t in board.list_tasks(assignee="writer")] == [b.id]
    assert {t.id for t in board.list_tasks()} == {a.id, b.id, c.id}
    created = board.events(kinds=["created"])[0].payload
    assert (created["assignee"], created["created_by"]) == ("researcher", "ana")


def test_bad_assignee_is_refused_before_anything(board: Board) -> None:
    for bad in ("", "two words", "-dash", "x" * 65, "a\nb"):
        refused(board, lambda bad=bad: board.create_task("t", assignee=bad), InvalidValue)


def test_assignees_counts_by_status_without_archived(board: Board, make_task: MakeTask) -> None:
    make_task("ready", assignee="researcher")
    make_task("running", assignee="researcher")
    make_task("archived", assignee="researcher")
    make_task("blocked", assignee="writer")
    make_task("ready")
    assert board.assignees() == [
        {"name": "researcher", "counts": {"ready": 1, "running": 1}, "total": 2},
        {"name": "writer", "counts": {"blocked": 1}, "total": 1},
        {"name": None, "counts": {"ready": 1}, "total": 1},
    ]


def test_assign_and_unassign_write_one_event_each(board: Board) -> None:
    t, _ = board.create_task("t")
    assert board.assign(t.id, "researcher").assignee == "researcher"
    assert board.assign(t.id, "researcher").assignee == "researcher"  # no change, no event
    assert board.assign(t.id, None).assignee is None
    assert [e.payload["assignee"] for e in board.events(kinds=["assigned"])] == ["researcher", None]


def test_a_running_task_is_reassigned_only_with_reclaim_and_its_worker_is_fenced(board: Board) -> None:
    t, _ = board.create_task("t", assignee="researcher")
    claim = board.claim(t.id)
    assert claim is not None
    err = refused(board, lambda: board.assign(t.id, "writer"), AlreadyClaimed)
    assert f"hermes kanban reassign {t.id} writer --reclaim" in err.message
    refused(board, lambda: board.reassign(t.id, "writer"), AlreadyClaimed)
    moved = board.reassign(t.id, "writer", reclaim=True, reason="stuck")
    assert (moved.status, moved.assignee, moved.current_run_id, moved.attempts) == ("ready", "writer", None, 0)
    run = board.runs(t.id)[0]
    assert (run.outcome, run.summary) == ("reclaimed", "stuck")
    # the old worker's reports are refused and change nothing
    refused(board, lambda: board.complete(t.id, claim.run_id, summary="late"), StaleRun)
    refused(board, lambda: board.heartbeat(t.id, claim.run_id), StaleRun)
    refused(board, lambda: board.block(t.id, claim.run_id, reason="late"), StaleRun)


def test_reclaim_frees_only_running_tasks(board: Board, make_task: MakeTask) -> None:
    ready = make_task("ready")
    refused(board, lambda: board.reclaim(ready.id), InvalidTransition,
            f"cannot reclaim task {ready.id}: it is ready, not running")
    child, _ = board.create_task("child")
    claim = board.claim(child.id)
    assert claim is not None
    t = board.reclaim(child.id, reason="wedged")
    assert t.status == "ready" and board.runs(child.id)[-1].outcome == "reclaimed"
    ev = board.events(kinds=["reclaimed"])[-1]
    assert (ev.run_id, ev.payload["manual"], ev.payload["reason"]) == (claim.run_id, True, "wedged")


# -- reports -----------------------------------------------------------------------------------------------------------
def test_result_and_metadata_are_kept_on_the_run_and_handed_to_children(board: Board) -> None:
    p, _ = board.create_task("research")
    c, _ = board.create_task("write", parents=[p.id])
    claim = board.claim(p.id)
    assert claim is not None
    done = board.complete(p.id, claim.run_id, result="3 sources", metadata='{"sources": 3}')
    assert (done.status, done.result, done.summary) == ("done", "3 sources", "3 sources")  # summary defaults
    run = board.runs(p.id)[0]
    assert (run.result, run.metadata, run.summary) == ("3 sources", {"sources": 3}, "3 sources")
    ctx = board.context(c.id)
    assert ctx["parents"] == [{"id": p.id, "title": "research", "status": "done", "assignee": None,
                               "result": "3 sources", "summary": "3 sources", "metadata": {"sources": 3}}]
    assert ctx["environment"]["HERMES_KANBAN_TASK"] == c.id
    assert ctx["environment"]["HERMES_KANBAN_DB"] == str(board.paths.db)


def test_an_operator_result_without_a_run_gets_a_zero_length_run(board: Board) -> None:
    t, _ = board.create_task("t")
    board.complete(t.id, result="done by hand", metadata={"by": "ana"}, summary="short")
    (run,) = board.runs(t.id)
    assert (run.worker, run.outcome, run.result, run.metadata, run.summary) == (
        "operator", "completed", "done by hand", {"by": "ana"}, "short")
    assert run.started_at == run.ended_at
    u, _ = board.create_task("u")
    board.complete(u.id)
    assert board.runs(u.id) == []  # nothing to carry: no run made up


def test_bad_metadata_is_refused(board: Board) -> None:
    t, _ = board.create_task("t")
    for bad in ("[1, 2]", "{nope", "3", '"text"'):
        refused(board, lambda bad=bad: board.complete(t.id, metadata=bad), InvalidValue)


def test_complete_many_is_all_or_none(board: Board, make_task: MakeTask) -> None:
    a, b, review = make_task("ready"), make_task("blocked"), make_task("review")
    refused(board, lambda: board.complete_many([a.id, b.id, review.id]), InvalidTransition)
    done = board.complete_many([a.id, b.id], result="bulk")
    assert [(t.status, t.result) for t in done] == [("done", "bulk"), ("done", "bulk")]


def test_dependency_block_waits_in_todo_and_is_promoted_when_the_parent_finishes(board: Board) -> None:
    p, _ = board.create_task("parent")
    c, _ = board.create_task("child")
    claim = board.claim(c.id)
    assert claim is not None
    board.complete(p.id)  # parent finished before the link: nothing to wait on
    lone = board.block(c.id, claim.run_id, reason="need data", kind="dependency")
    assert (lone.status, lone.block_kind) == ("blocked", "needs_input")
    board.unblock(c.id)
    q, _ = board.create_task("new parent")
    board.link(q.id, c.id)
    claim2 = board.claim(q.id)
    assert claim2 is not None
    waiting, _ = board.create_task("waits", parents=[q.id])
    board.promote([waiting.id], force=True)
    claim3 = board.claim(waiting.id)
    assert claim3 is not None
    t = board.block(waiting.id, claim3.run_id, reason="parent not done", kind="dependency")
    assert (t.status, t.block_kind) == ("todo", "dependency")
    assert board.events(kinds=["dependency_wait"])[-1].task_id == waiting.id
    board.complete(q.id, claim2.run_id)
    assert board.get_task(waiting.id).status == "ready"


def test_block_kinds_are_checked_and_cleared_by_unblock(board: Board) -> None:
    t, _ = board.create_task("t")
    refused(board, lambda: board.block(t.id, kind="bogus"), InvalidValue)
    b = board.block(t.id, reason="needs a key", kind="capability")
    assert (b.status, b.block_kind) == ("blocked", "capability")
    assert board.events(kinds=["blocked"])[-1].payload["block_kind"] == "capability"
    assert board.unblock(t.id).block_kind is None


def test_block_many_and_unblock_many_are_all_or_none(board: Board, make_task: MakeTask) -> None:
    a, b, done = make_task("ready"), make_task("ready"), make_task("done")
    refused(board, lambda: board.block_many([a.id, b.id, done.id], reason="x"), InvalidTransition)
    assert [t.status for t in board.block_many([a.id, b.id], reason="x", kind="transient")] == ["blocked"] * 2
    refused(board, lambda: board.unblock_many([a.id, done.id]), InvalidTransition)
    assert [t.status for t in board.unblock_many([a.id, b.id])] == ["ready", "ready"]


def test_heartbeat_note_is_an_event_and_fenced(board: Board) -> None:
    t, _ = board.create_task("t")
    claim = board.claim(t.id)
    assert claim is not None
    board.heartbeat(t.id, claim.run_id, note="half way")
    assert [(e.kind, e.payload) for e in board.events(kinds=["heartbeat"])] == [("heartbeat", {"note": "half way"})]
    board.heartbeat(t.id, claim.run_id)  # no note: no event, as before
    assert len(board.events(kinds=["heartbeat"])) == 1


# -- lifecycle ---------------------------------------------------------------------------------------------------------
def test_create_triage_or_blocked(board: Board) -> None:
    t, _ = board.create_task("idea", triage=True)
    b, _ = board.create_task("ops gate", initial_status="blocked")
    r, _ = board.create_task("normal", initial_status="running")
    assert (t.status, b.status, b.block_kind, r.status) == ("triage", "blocked", "needs_input", "ready")
    assert board.claim() is not None and board.claim() is None  # only the normal one is claimable
    refused(board, lambda: board.create_task("x", triage=True, initial_status="blocked"), InvalidValue)
    refused(board, lambda: board.create_task("x", initial_status="done"), InvalidValue)


def test_promote_checks_parents_dry_run_changes_nothing_and_several_are_all_or_none(board: Board) -> None:
    p, _ = board.create_task("parent")
    c, _ = board.create_task("child", parents=[p.id])
    tri, _ = board.create_task("idea", triage=True)
    err = refused(board, lambda: board.promote([c.id]), InvalidTransition)
    assert err.message == (f"cannot promote task {c.id}: unfinished parents {p.id} (ready); finish them, or pass "
                           "--force")
    before = dump_board(board.paths.db)
    assert [t.status for t in board.promote([c.id, tri.id], force=True, dry_run=True)] == ["todo", "triage"]
    assert dump_board(board.paths.db) == before
    refused(board, lambda: board.promote([tri.id, p.id]), InvalidTransition)  # p is ready: not promotable
    out = board.promote([tri.id, c.id], force=True, reason="go")
    assert [t.status for t in out] == ["ready", "ready"]
    assert [e.payload["previous"] for e in board.events(kinds=["promoted_manual"])] == ["triage", "todo"]


def test_edit_fields_and_backfill_a_result(board: Board, make_task: MakeTask) -> None:
    t = make_task("ready")
    e = board.edit(t.id, title="better title", priority="7", body="more")
    assert (e.title, e.priority, e.body) == ("better title", 7, "more")
    assert board.events(kinds=["edited"])[-1].payload["fields"] == ["body", "priority", "title"]
    refused(board, lambda: board.edit(t.id, result="x"), InvalidTransition)
    refused(board, lambda: board.edit(t.id), InvalidValue)
    refused(board, lambda: board.edit(t.id, summary="s"), InvalidValue)
    refused(board, lambda: board.edit(t.id, priority="high"), InvalidValue)
    claim = board.claim(t.id)
    assert claim is not None
    board.complete(t.id, claim.run_id, summary="first")
    d = board.edit(t.id, result="the real result", metadata={"k": 1})
    assert d.result == "the real result"
    run = board.runs(t.id)[-1]
    assert (run.result, run.metadata) == ("the real result", {"k": 1})


def test_delete_only_archived_tasks_keeping_their_events(board: Board, make_task: MakeTask) -> None:
    a, live = make_task("ready"), make_task("ready")
    child, _ = board.create_task("child", parents=[a.id])
    board.comment(a.id, "note")
    refused(board, lambda: board.delete_archived([a.id]), InvalidTransition)
    board.archive(a.id)
    refused(board, lambda: board.delete_archived([a.id, live.id]), InvalidTransition)
    assert board.delete_archived([a.id]) == [a.id]
    assert board.db.value("SELECT count(*) FROM tasks WHERE id = ?", (a.id,)) == 0
    assert board.db.value("SELECT count(*) FROM links WHERE parent_id = ?", (a.id,)) == 0
    assert [e.kind for e in board.events(task_id=a.id)][-1] == "deleted"
    assert board.get_task(child.id).status == "ready"
    if board.db.engine == "sqlite":  # PostgreSQL checks every reference as it is written
        assert board.db.rows("PRAGMA foreign_key_check") == []


def test_archive_many_is_all_or_none(board: Board, make_task: MakeTask) -> None:
    a, b, gone = make_task("ready"), make_task("done"), make_task("archived")
    refused(board, lambda: board.archive_many([a.id, gone.id]), InvalidTransition)
    assert [t.status for t in board.archive_many([a.id, b.id])] == ["archived", "archived"]


# -- gc ----------------------------------------------------------------------------------------------------------------
def test_gc_never_removes_what_a_subscription_has_not_consumed(board: Board) -> None:
    from hermes_cli.kanban.live.readers import subscribe

    old, _ = board.create_task("old and done")
    board.complete(old.id)
    live, _ = board.create_task("still ready")
    subscribe(board, "pager")  # the subscription's cursor starts at the current last event
    sub_at = board.db.value("SELECT cursor FROM subscriptions WHERE name = 'pager'")
    assert sub_at >= board.events(task_id=old.id)[-1].id
    later, _ = board.create_task("done after the subscription")
    board.complete(later.id)
    # age every event by 40 days
    board.db.write(lambda: board.db.execute("UPDATE events SET created_at = created_at - 40 * 86400"))
    out = board.gc(event_retention_days=30, log_retention_days=30)
    left = {(e.task_id, e.kind) for e in board.events()}
    assert (old.id, "created") not in left and (old.id, "completed") not in left  # done, old, consumed
    assert (live.id, "created") in left  # its task is still in play
    assert {(later.id, "created"), (later.id, "completed")} <= left  # after the subscription's cursor
    assert out["events_removed"] == 2 and out["kept_after_event"] == sub_at
    assert board.gc()["events_removed"] == 0


def test_gc_removes_old_logs_of_tasks_not_running(board: Board, make_task: MakeTask) -> None:
    done, running = make_task("done"), make_task("running")
    board.paths.logs_dir.mkdir(parents=True, exist_ok=True)
    old = time.time() - 40 * 86400
    for t in (done, running):
        log = board.paths.logs_dir / f"{t.id}.log"
        log.write_text("output\n")
        os.utime(log, (old, old))
    fresh = board.paths.logs_dir / f"{make_task('done').id}.log"
    fresh.write_text("new\n")
    assert board.gc(log_retention_days=30)["logs_removed"] == 1
    assert not (board.paths.logs_dir / f"{done.id}.log").exists()
    assert (board.paths.logs_dir / f"{running.id}.log").exists() and fresh.exists()
    refused(board, lambda: board.gc(event_retention_days=-1), InvalidValue)


# -- diagnostics -------------------------------------------------------------------------------------------------------
def test_diagnostics_find_stranded_stuck_and_looping_tasks(board: Board, make_task: MakeTask) -> None:
    stranded = make_task("running")
    board.db.write(lambda: board.db.execute("UPDATE tasks SET lease_expires_at = ? WHERE id = ?",
                                            (time.time() - 100, stranded.id)))
    looping = make_task("ready")
    for _ in range(2):
        board.block(looping.id, reason="again")
        board.unblock(looping.id)
    board.block(looping.id, reason="again")
    tri, _ = board.create_task("idea", triage=True)
    quiet = make_task("done")
    found = board.diagnostics()
    kinds = {(d["task_id"], d["kind"]): d for d in found}
    assert kinds[(stranded.id, "stranded")]["next"] == f"hermes kanban reclaim {stranded.id}"
    assert kinds[(stranded.id, "stranded")]["severity"] == "error"
    assert kinds[(looping.id, "block_loop")]["next"] == f"hermes kanban show {looping.id}"
    assert kinds[(tri.id, "triage")]["next"] == f"hermes kanban promote {tri.id}"
    assert not any(d["task_id"] == quiet.id for d in found)
    assert {d["severity"] for d in board.diagnostics(severity="error")} == {"error"}
    assert [d["task_id"] for d in board.diagnostics(tri.id)] == [tri.id]
    refused(board, lambda: board.diagnostics(severity="info"), InvalidValue)


def test_diagnostics_crash_loop_and_stuck_ready(board: Board) -> None:
    t, _ = board.create_task("flaky", max_retries=5)
    for _ in range(2):
        c = board.claim(t.id)
        assert c is not None
        board.finish_run(t.id, c.run_id, "crashed", exit_code=1, retry_after=0)
    found = {d["kind"]: d for d in board.diagnostics(t.id, ready_wait_s=0)}
    assert found["crash_loop"]["data"] == {"failed_runs": 2}
    assert found["stuck_ready"]["next"] == "hermes kanban dispatch"
    assert board.get_task(t.id).status == TaskStatus.READY
