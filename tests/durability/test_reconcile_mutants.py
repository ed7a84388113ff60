"""reconcile.decide, row by row of its table (reconcile.py docstring), with the exact effect and the detail an
operator reads, where mutation testing (bench/mutation.sh reconcile, docs/mutation.md) found that a change to a
branch, a comparison or an index would go unnoticed. In-process and fast: the first tests the mutation run executes.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.models import iso
from hermes_cli.kanban.core.paths import BoardPaths
from hermes_cli.kanban.durability import reconcile, spool

from .test_reconcile_rules import expire


def decide(b: Board, paths: BoardPaths, kind: str, task_id: str, run_id: int | None, *, force: bool = False,
           spooled_at: float | None = None) -> reconcile.Decision:
    report, _ = spool.spool_report(paths, kind, task_id, run_id, summary=f"{kind} report", force=force)
    if spooled_at is not None:
        report = dataclasses.replace(report, spooled_at=spooled_at)
    d = reconcile.decide(b, report, time.time())
    report.path.unlink()  # one report at a time: the next case may reuse the task+run
    return d


def row(d: reconcile.Decision) -> tuple[str | None, str, str, str | None, str | None]:
    return d.status, d.proposed_action, d.reason, d.effect, d.detail


def test_unknown_archived_done_and_other_tasks_runs_are_skips(paths: BoardPaths) -> None:
    with Board.open() as b:
        assert row(decide(b, paths, "complete", "t_0123456789ab", 1)) == (None, "skip", "unknown_task", None, None)
        archived, _ = b.create_task("archived")
        b.archive(archived.id)
        assert row(decide(b, paths, "complete", archived.id, None)) == ("archived", "skip", "archived", None, None)
        done, _ = b.create_task("done")
        b.complete(done.id, summary="by hand", force=True)
        assert row(decide(b, paths, "block", done.id, None)) == ("done", "skip", "already_done", None, None)
        mine, _ = b.create_task("mine")
        other, _ = b.create_task("other")
        c = b.claim(other.id, worker="w")
        assert c is not None
        assert row(decide(b, paths, "complete", mine.id, c.run_id)) == (
            "ready", "skip", "run_of_other_task", None, None)


def test_a_report_that_already_landed_is_already_applied(paths: BoardPaths) -> None:
    with Board.open() as b:
        t, _ = b.create_task("blocked by its own run")
        c = b.claim(t.id, worker="w")
        assert c is not None
        b.block(t.id, c.run_id, reason="needs a key")
        assert row(decide(b, paths, "block", t.id, c.run_id)) == ("blocked", "skip", "already_applied", None, None)
        # a complete report of that blocked run did not land: it is judged as a late report of a run closed by
        # another action (the worker's own block), not as applied
        d = decide(b, paths, "complete", t.id, c.run_id)
        assert row(d)[:3] == ("blocked", "conflict", "closed_by_other_action")
        assert d.detail == f"run {c.run_id} ended as blocked, not by the board's failure detection"


def test_running_tasks_apply_only_the_current_runs_report_or_a_persons_forced_one(paths: BoardPaths) -> None:
    with Board.open() as b:
        plain, _ = b.create_task("plain")
        gated, _ = b.create_task("gated", review=True)
        cp = b.claim(plain.id, worker="w", ttl=600)
        cg = b.claim(gated.id, worker="w", ttl=600)
        assert cp is not None and cg is not None
        assert row(decide(b, paths, "complete", plain.id, cp.run_id)) == (
            "running", "apply", "current_run", "done", None)
        assert row(decide(b, paths, "complete", gated.id, cg.run_id)) == (
            "running", "apply", "current_run", "review", None)
        assert row(decide(b, paths, "block", gated.id, cg.run_id)) == (
            "running", "apply", "current_run", "blocked", None)
        assert row(decide(b, paths, "complete", plain.id, None, force=True)) == (
            "running", "apply", "forced", "done", None)
        held = f"run {cp.run_id} holds the task"
        assert row(decide(b, paths, "complete", plain.id, None)) == (
            "running", "conflict", "active_claim_by_other_run", None, held)
        assert row(decide(b, paths, "complete", plain.id, cp.run_id + 100, force=True)) == (
            "running", "conflict", "active_claim_by_other_run", None, held)


def test_a_running_task_whose_lease_lapsed_is_an_expired_claim(paths: BoardPaths) -> None:
    with Board.open() as b:
        t, _ = b.create_task("lapsed")
        c = b.claim(t.id, worker="w", ttl=0.05)
        assert c is not None
        time.sleep(0.1)  # lapsed, not reclaimed yet
        assert row(decide(b, paths, "complete", t.id, None)) == (
            "running", "conflict", "expired_claim_by_other_run", None, f"run {c.run_id} holds the task")


def test_waiting_review_and_blocked_tasks(paths: BoardPaths) -> None:
    with Board.open() as b:
        parent, _ = b.create_task("parent")
        child, _ = b.create_task("child", parents=[parent.id])
        assert row(decide(b, paths, "complete", child.id, None)) == (
            "todo", "conflict", "waiting_on_parents", None, None)
        gated, _ = b.create_task("gated", review=True)
        c = b.claim(gated.id, worker="w")
        assert c is not None
        b.complete(gated.id, c.run_id, summary="please look")
        assert row(decide(b, paths, "complete", gated.id, None)) == (
            "review", "skip", "review_gate_blocked", None, None)
        blocked, _ = b.create_task("blocked")
        b.block(blocked.id, reason="by hand")
        assert row(decide(b, paths, "block", blocked.id, None)) == ("blocked", "skip", "already_blocked", None, None)
        assert row(decide(b, paths, "complete", blocked.id, None)) == (
            "blocked", "apply", "manual_report", "done", None)


def test_a_run_id_above_everything_the_board_handed_out_is_unknown(paths: BoardPaths) -> None:
    with Board.open() as b:
        t, _ = b.create_task("x")
        c = b.claim(t.id, worker="w")
        assert c is not None
        b.block(t.id, reason="by hand", force=True)
        d = decide(b, paths, "complete", t.id, c.run_id + 1)
        assert row(d) == ("blocked", "conflict", "unknown_run", None,
                          f"run {c.run_id + 1} was never handed out by this board")


def test_a_late_report_names_the_latest_run_that_came_after_it(paths: BoardPaths) -> None:
    with Board.open() as b:
        t, _ = b.create_task("x")
        first = expire(b, t.id)
        expire(b, t.id)
        third = expire(b, t.id)
        d = decide(b, paths, "complete", t.id, first)
        assert row(d) == ("ready", "conflict", "closed_by_other_action", None,
                          f"run {third} was started on the task after run {first}")
        assert row(decide(b, paths, "complete", t.id, third)) == ("ready", "apply", "late_report", "done", None)


def test_a_late_report_names_the_last_change_a_person_made(paths: BoardPaths) -> None:
    with Board.open() as b:
        t, _ = b.create_task("x")
        run = expire(b, t.id)
        b.block(t.id, reason="hold on")
        b.comment(t.id, "a comment is not a change")
        b.unblock(t.id)
        last = [e for e in b.events(task_id=t.id) if e.kind == "unblocked"][-1]
        d = decide(b, paths, "complete", t.id, run)
        assert row(d) == ("ready", "conflict", "closed_by_other_action", None,
                          f"task {t.id} was changed after run {run} ended "
                          f"(unblocked at {iso(last.created_at)}, event {last.id})")


def test_an_open_run_that_is_not_the_current_one_is_not_late(paths: BoardPaths) -> None:
    """A ready task with an open run (its process record left behind by an archive-and-restore, say) is refused:
    only runs the board's own failure detection closed may apply late."""
    with Board.open() as b:
        t, _ = b.create_task("x")
        c = b.claim(t.id, worker="w")
        assert c is not None
        # reopen the closed run the way an inconsistent board would show it
        b.block(t.id, reason="by hand", force=True)
        b.unblock(t.id)
        b.db.write(lambda: b.db.execute("UPDATE runs SET ended_at = NULL, outcome = NULL WHERE id = ?",
                                        (c.run_id,)))
        d = decide(b, paths, "complete", t.id, c.run_id)
        assert row(d) == ("ready", "conflict", "closed_by_other_action", None,
                          f"run {c.run_id} is still open, not by the board's failure detection")


@pytest.mark.parametrize("changed", [False, True])
def test_a_report_of_a_run_unknown_after_a_restore_applies_unless_the_task_changed_after_it(
    paths: BoardPaths, changed: bool
) -> None:
    with Board.open() as b:
        t, _ = b.create_task("x")
        expire(b, t.id)  # run 1 is known; run ids up to the high-water mark are "unknown after a restore"
        b.db.write(lambda: b.db.execute("DELETE FROM runs WHERE task_id = ?", (t.id,)))
        spooled_at = time.time()
        time.sleep(0.01)
        if changed:
            b.block(t.id, reason="after the report")
        d = decide(b, paths, "complete", t.id, 1, spooled_at=spooled_at)
        if changed:
            assert row(d)[:3] == ("blocked", "conflict", "closed_by_other_action")
            assert d.detail is not None and d.detail.startswith(f"task {t.id} was changed after run 1 ended (blocked")
        else:
            assert row(d) == ("ready", "apply", "late_report", "done", None)


def test_apply_counts_what_it_applied_filed_skipped_and_refused(paths: BoardPaths) -> None:
    with Board.open() as b:
        applies, _ = b.create_task("applies")
        ca = b.claim(applies.id, worker="w", ttl=600)
        done, _ = b.create_task("done")
        b.complete(done.id, summary="by hand", force=True)
        done2, _ = b.create_task("done too")
        b.complete(done2.id, summary="by hand", force=True)
        gated, _ = b.create_task("gated", review=True)
        cg = b.claim(gated.id, worker="w")
        held, _ = b.create_task("held")
        ch = b.claim(held.id, worker="w", ttl=600)
        assert ca is not None and cg is not None and ch is not None
        b.complete(gated.id, cg.run_id, summary="look")
        spool.spool_report(paths, "complete", applies.id, ca.run_id, summary="ok")
        spool.spool_report(paths, "complete", done.id, None, summary="late")  # already_done: filed away
        spool.spool_report(paths, "block", done2.id, None, summary="late too")  # filed away too
        spool.spool_report(paths, "complete", gated.id, None, summary="again")  # review gate: stays pending
        spool.spool_report(paths, "complete", held.id, None, summary="not forced")  # conflict: stays pending
        bad = paths.spool_dir / f"{held.id}.77.json"
        bad.write_text("[]")
        result = reconcile.apply(b, backup=False)
        d = result.as_dict()
        assert (d["applied"], d["skipped"], d["conflicts"], d["filed_as_skipped"], d["backup"]) == (1, 3, 1, 2, None)
        assert [i["file"] for i in d["invalid_files"]] == [str(bad)]
        assert [r["reason"] for r in d["records"]] == [  # oldest report first, then the invalid files
            "current_run", "already_done", "already_done", "review_gate_blocked", "active_claim_by_other_run",
            "invalid_report"]
        assert b.get_task(applies.id).status == "done"
    assert sorted(p.name for p in paths.spool_dir.glob("*.json")) == sorted(
        [spool.file_name(gated.id, None), spool.file_name(held.id, None)])


def test_applied_reports_say_so_in_their_events(paths: BoardPaths) -> None:
    with Board.open() as b:
        forced, _ = b.create_task("forced")
        assert b.claim(forced.id, worker="w", ttl=600) is not None
        blocks, _ = b.create_task("blocks")
        cb = b.claim(blocks.id, worker="w", ttl=600)
        plain, _ = b.create_task("plain")
        cp = b.claim(plain.id, worker="w", ttl=600)
        assert cb is not None and cp is not None
        spool.spool_report(paths, "complete", forced.id, None, summary="done by hand", force=True)
        spool.spool_report(paths, "block", blocks.id, cb.run_id, summary="needs a key")
        spool.spool_report(paths, "complete", plain.id, cp.run_id, summary="ok")
        assert reconcile.apply(b, backup=False).applied == 3
        [done_forced] = b.events(task_id=forced.id, kinds=["completed"])
        [blocked] = b.events(task_id=blocks.id, kinds=["blocked"])
        [done_plain] = b.events(task_id=plain.id, kinds=["completed"])
    assert done_forced.payload.get("forced") is True and done_forced.payload.get("reconciled") is True
    assert blocked.payload.get("reconciled") is True and blocked.run_id == cb.run_id
    assert done_plain.payload.get("forced") is None and done_plain.payload.get("reconciled") is True


def test_a_decision_is_immutable(paths: BoardPaths) -> None:
    with Board.open() as b:
        d = decide(b, paths, "complete", "t_0123456789ab", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.reason = "changed"  # type: ignore[misc]
