"""What reconcile-completions may and may not do with a spooled report (review findings 1-6).

- a fenced (stale) report never overrides what a person or a later run did: a late report applies only when the
  board's own failure detection closed its run and nothing happened to the task since;
- one bad spooled report never holds up the others, never crashes the dispatcher, and bad input is refused the same
  way on the busy path as on the normal one;
- a review-gated task's report applies as `complete` would have (to review); a task in review is left to a person;
- the `reconciled` event and the --json output follow the CLI contract;
- two backups in the same millisecond both succeed.

The busy path is the real one: a helper process holds the board's write lock (BEGIN IMMEDIATE) while the CLI runs
with HERMES_KANBAN_BUSY_TIMEOUT_MS=1, so the report is spooled exactly as a worker's would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.errors import InvalidValue
from hermes_cli.kanban.core.models import RunOutcome, iso
from hermes_cli.kanban.core.paths import BoardPaths
from hermes_cli.kanban.durability import backup as backups
from hermes_cli.kanban.durability import drain, reconcile, spool
from hermes_cli.kanban.durability.spool import SpooledReport

from .conftest import HOLD_WRITE_LOCK, Result, checkpoint_and_close, hermes, stop

BUSY = {"HERMES_KANBAN_BUSY_TIMEOUT_MS": "1"}
BIG_RUN_ID = 2**63  # one past the largest rowid


def run_cli(*args: str | bytes, env: dict[str, str] | None = None) -> Result:
    """Like conftest.hermes, but argv may hold raw bytes (a non-UTF-8 argument, as a shell would pass it)."""
    p = subprocess.run([sys.executable.encode(), b"-m", b"hermes_cli.main", b"kanban",
                        *(a if isinstance(a, bytes) else a.encode() for a in args)],
                       capture_output=True, env={**os.environ, **(env or {})}, timeout=60, stdin=subprocess.DEVNULL)
    return Result(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))


@pytest.fixture
def locked(paths: BoardPaths, helper: Any) -> Iterator[None]:
    """The board's write lock held by another process for the duration of the block."""
    with Board.open():
        pass  # the board exists before the helper opens it
    proc = helper(HOLD_WRITE_LOCK, str(paths.db), ready="locked")
    yield
    stop(proc)


def expire(board: Board, task_id: str) -> int:
    """Claim `task_id` with a tiny lease, let it lapse and let the board reclaim it: the board's own failure
    detection closes the run (outcome reclaimed). Returns the run id."""
    c = board.claim(task_id, worker="w", ttl=0.05)
    assert c is not None
    time.sleep(0.1)
    assert [t.id for t in board.reclaim_expired()] == [task_id]
    return c.run_id


def decision(board: Board, task_id: str) -> tuple[str, str]:
    decisions, invalid = reconcile.plan(board)
    assert invalid == []
    (d,) = [d for d in decisions if d.report.task_id == task_id]
    return d.proposed_action, d.reason


# -- finding 1: a stale report never overrides a person's action -------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_fenced_report_spooled_later_does_not_undo_a_persons_block(paths, helper):
    """The reviewer's repro, end to end with real processes."""
    t = hermes("create", "A").out.strip()
    assert hermes("claim", t, "--json").json["run_id"] == 1
    assert hermes("block", t, "operator: stop", "--force").rc == 0  # run 1 is closed as blocked by a person
    r = hermes("complete", t, "--run-id", "1")
    assert r.rc == 3 and r.err.startswith("error: run 1 is not the current run"), r  # fenced on the normal path
    holder = helper(HOLD_WRITE_LOCK, str(paths.db), ready="locked")
    r = hermes("complete", t, "--run-id", "1", "--summary", "worker finished", "--json", env=BUSY)
    stop(holder)
    assert r.rc == 0 and r.json["spooled"] is True, r  # the busy path cannot ask the board: it spools

    r = hermes("reconcile-completions", "--json")
    assert r.rc == 0, r
    assert [(x["proposed_action"], x["reason"]) for x in r.json] == [("conflict", "closed_by_other_action")]
    assert "run 1 ended as blocked" in r.json[0]["detail"]

    r = hermes("reconcile-completions", "--apply", "--json")
    assert r.rc == 3, r
    assert r.json["applied"] == 0 and r.json["conflicts"] == 1
    assert [x["reason"] for x in r.json["records"]] == ["closed_by_other_action"]
    # finding 5: a non-zero exit carries the contract's error object on stdout and exactly one error line on stderr
    assert r.json["error"]["code"] == "conflict" and "closed_by_other_action" in r.json["error"]["message"]
    assert r.err.count("error: ") == 1 and r.err.startswith("error: 1 spooled report(s) conflict"), r.err
    with Board.open() as b:
        task = b.get_task(t)
        assert (task.status, task.summary) == ("blocked", None)
        assert b.events(kinds=["reconciled"]) == []
    assert [p.name for p in paths.spool_dir.glob("*.json")] == [spool.file_name(t, 1)]  # still waiting for a person


def test_late_report_applies_only_when_the_board_closed_the_run_and_nothing_happened_since(paths):
    with Board.open() as b:
        ids = {name: b.create_task(name)[0].id for name in
               ("quiet", "commented", "crashed", "person_blocked", "unblocked_again", "later_run", "forced_done",
                "bogus_run")}
        runs = {name: expire(b, ids[name]) for name in ("quiet", "commented", "person_blocked", "unblocked_again")}
        b.comment(ids["commented"], "still looking")  # a comment changes nothing about the task
        b.block(ids["person_blocked"], reason="operator: stop")
        b.block(ids["unblocked_again"], reason="hold on")
        b.unblock(ids["unblocked_again"])  # back to ready, but a person touched it after the run ended
        c = b.claim(ids["crashed"], worker="w")
        assert c is not None
        b.finish_run(ids["crashed"], c.run_id, RunOutcome.CRASHED, exit_code=1, retry_after=0)
        runs["crashed"] = c.run_id
        runs["later_run"] = expire(b, ids["later_run"])
        expire(b, ids["later_run"])  # a second run came and went: the first run's report is stale
        c = b.claim(ids["forced_done"], worker="w", ttl=600)
        assert c is not None
        b.complete(ids["forced_done"], summary="done by hand", force=True)
        runs["forced_done"] = c.run_id
        runs["bogus_run"] = 10_000  # never handed out by this board (a typo'd --run-id, spooled while busy)
    for name, run_id in runs.items():
        spool.spool_report(paths, "complete", ids[name], run_id, summary=f"late {name}")
    expected = {
        "quiet": ("apply", "late_report"),
        "commented": ("apply", "late_report"),
        "crashed": ("apply", "late_report"),
        "person_blocked": ("conflict", "closed_by_other_action"),
        "unblocked_again": ("conflict", "closed_by_other_action"),
        "later_run": ("conflict", "closed_by_other_action"),
        "forced_done": ("skip", "already_done"),
        "bogus_run": ("conflict", "unknown_run"),
    }
    with Board.open() as b:
        assert {name: decision(b, ids[name]) for name in ids} == expected
        result = reconcile.apply(b, backup=False)
        assert result.applied == 3 and result.conflicts == 4
        after = {name: (b.get_task(i).status, b.get_task(i).summary) for name, i in ids.items()}
        assert after == {
            "quiet": ("done", "late quiet"), "commented": ("done", "late commented"),
            "crashed": ("done", "late crashed"), "person_blocked": ("blocked", None),
            "unblocked_again": ("ready", None), "later_run": ("ready", None), "forced_done": ("done", "done by hand"),
            "bogus_run": ("ready", None),
        }
        # the closed run keeps what the board saw then; the report is recorded beside it
        assert [b.detail(ids[n]).runs[-1].outcome for n in ("quiet", "crashed")] == ["reclaimed", "crashed"]
        assert sorted(e.task_id for e in b.events(kinds=["reconciled"])) == sorted(
            ids[n] for n in ("quiet", "commented", "crashed"))


# -- finding 2: one bad report never holds up the others ---------------------------------------------------------------
def test_bad_input_is_refused_on_the_busy_path_exactly_as_on_the_normal_path(paths, locked):
    t = "t_0123456789ab"
    env = {"HERMES_KANBAN_TASK": t, "HERMES_KANBAN_RUN_ID": str(BIG_RUN_ID), **BUSY}
    r = run_cli("complete", "--json", env=env)
    assert r.rc == 1, r
    assert r.err == (f"error: invalid run id {BIG_RUN_ID}: run ids are whole numbers from 1 to {BIG_RUN_ID - 1}\n")
    assert json.loads(r.out)["error"]["code"] == "invalid_value"
    r = run_cli("complete", t, "--run-id", "1", "--summary", b"caf\xff", env=BUSY)
    assert r.rc == 1 and r.err.startswith("error: invalid summary 'caf\\udcff': it is not valid UTF-8"), r
    r = run_cli("block", t, b"why \xfe", "--run-id", "1", env=BUSY)
    assert r.rc == 1 and r.err.startswith("error: invalid reason 'why \\udcfe': it is not valid UTF-8"), r
    assert not paths.spool_dir.exists(), "bad input must never be spooled"


def test_bad_summary_is_refused_before_the_spool():
    with pytest.raises(InvalidValue, match="the summary is 1000001 characters; the limit is 1000000"):
        spool.check_report("complete", "t_0123456789ab", 1, "x" * 1_000_001)
    with pytest.raises(InvalidValue, match="invalid run id 0"):
        spool.check_report("block", "t_0123456789ab", 0, None)


def write_raw(paths: BoardPaths, name: str, data: dict[str, Any]) -> Path:
    """A spool file as an older version (or a person) could have left it: no validation on the way in."""
    paths.spool_dir.mkdir(mode=0o700, exist_ok=True)
    p = paths.spool_dir / name
    p.write_text(json.dumps({"format": 1, "force": False, "spooled_at": time.time(), **data}))
    return p


def seed_bad_spool(paths: BoardPaths) -> tuple[str, int]:
    """Two files the reviewer got into the spool through the busy path, plus one good report."""
    with Board.open() as b:
        t, _ = b.create_task("good")
        c = b.claim(t.id, worker="w", ttl=600)
        assert c is not None
        other, _ = b.create_task("victim of the bad files")
        assert b.claim(other.id, worker="elsewhere", ttl=600) is not None  # nothing for a dispatcher to spawn
    write_raw(paths, spool.file_name(other.id, BIG_RUN_ID),
              {"kind": "complete", "task_id": other.id, "run_id": BIG_RUN_ID, "summary": "x"})
    write_raw(paths, spool.file_name(other.id, 7),
              {"kind": "complete", "task_id": other.id, "run_id": 7, "summary": "caf\udcff"})
    spool.spool_report(paths, "complete", t.id, c.run_id, summary="good one")
    return t.id, c.run_id


def test_invalid_spool_files_are_listed_set_aside_and_never_hold_up_the_good_ones(paths):
    tid, rid = seed_bad_spool(paths)
    r = hermes("reconcile-completions", "--json")
    assert r.rc == 0, r
    by_reason = sorted((x["reason"], x["proposed_action"]) for x in r.json)
    assert by_reason == [("current_run", "apply"), ("invalid_report", "skip"), ("invalid_report", "skip")]
    problems = sorted(x["detail"] for x in r.json if x["reason"] == "invalid_report")
    assert problems[0].startswith("invalid run id 9223372036854775808")
    assert problems[1].startswith("invalid summary 'caf\\udcff': it is not valid UTF-8")
    assert r.err.count("is not a valid spool report") == 2

    r = hermes("reconcile-completions", "--apply", "--json")
    assert r.rc == 0, r
    assert r.json["applied"] == 1 and len(r.json["invalid_files"]) == 2
    with Board.open() as b:
        assert b.get_task(tid).status == "done"
    invalid_dir = paths.spool_dir / spool.INVALID
    moved = sorted(p.name for p in invalid_dir.iterdir())
    assert len(moved) == 4 and sum(n.endswith(".reason.json") for n in moved) == 2
    reasons = [json.loads((invalid_dir / n).read_text())["problem"] for n in moved if n.endswith(".reason.json")]
    assert any("not valid UTF-8" in p for p in reasons) and any("invalid run id" in p for p in reasons)
    assert list(paths.spool_dir.glob("*.json")) == []  # nothing left pending
    r = hermes("doctor", "--json")
    finding = next(f for f in r.json["findings"] if f["check"] == "spool_invalid")
    assert finding["level"] == "warn" and len(finding["data"]["files"]) == 2


def test_one_report_the_board_refuses_does_not_roll_back_the_others(paths):
    """Pre-validation keeps bad values out of the spool; should one still reach the apply (a bug, a hand-made
    report object), the transaction is re-run without it."""
    with Board.open() as b:
        claims = []
        for i in range(3):
            t, _ = b.create_task(f"t{i}")
            c = b.claim(t.id, worker="w", ttl=600)
            assert c is not None
            claims.append((t.id, c.run_id))

        def rep(tid: str, rid: int, summary: str) -> SpooledReport:
            return SpooledReport(path=paths.spool_dir / spool.file_name(tid, rid), kind="complete", task_id=tid,
                                 run_id=rid, summary=summary, force=False, spooled_at=time.time(), source="spooled",
                                 error=None)

        out = reconcile._apply_all(b, [rep(*claims[0], "ok 0"), rep(*claims[1], "bad \udcff"), rep(*claims[2], "ok 2")])
        got = {d.report.task_id: (d.proposed_action, d.reason) for d in out}
        assert got == {claims[0][0]: ("apply", "current_run"), claims[1][0]: ("conflict", "apply_failed"),
                       claims[2][0]: ("apply", "current_run")}
        assert [b.get_task(t).status for t, _ in claims] == ["done", "running", "done"]


def test_drain_if_healthy_logs_and_never_raises(paths, monkeypatch, caplog):
    tid, rid = seed_bad_spool(paths)
    logged: list[str] = []
    with Board.open() as b:
        monkeypatch.setenv("HERMES_KANBAN_BACKUP_KEEP", "many")  # the apply's backup step refuses the setting
        assert drain.drain_if_healthy(b) == 0  # without a log callback: the module's logger
        assert [r.getMessage() for r in caplog.records if "HERMES_KANBAN_BACKUP_KEEP='many'" in r.getMessage()]
        assert drain.drain_if_healthy(b, log=logged.append) == 0 and logged == []  # same state: not re-logged
        monkeypatch.delenv("HERMES_KANBAN_BACKUP_KEEP")
        spool.spool_report(paths, "block", "t_00000000aaaa", 5, summary="an unrelated report changes the spool")
        assert drain.drain_if_healthy(b, log=logged.append) == 1
        assert b.get_task(tid).status == "done"
    assert sum("is not a valid report" in line for line in logged) == 2


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_dispatcher_survives_a_bad_spool_file(paths):
    tid, rid = seed_bad_spool(paths)
    r = hermes("dispatch", "--once", "--timeout", "20s", "-q")
    assert r.rc == 0, r
    with Board.open() as b:
        assert b.get_task(tid).status == "done"
    assert len(spool.set_aside_files(paths)) == 2


# -- finding 3: the review gate ----------------------------------------------------------------------------------------
def test_review_gated_reports_apply_as_complete_would_and_tasks_in_review_wait_for_a_person(paths):
    with Board.open() as b:
        running, _ = b.create_task("gated, still running", review=True)
        c = b.claim(running.id, worker="w", ttl=600)
        assert c is not None
        late, _ = b.create_task("gated, reclaimed", review=True)
        late_run = expire(b, late.id)
        in_review, _ = b.create_task("gated, in review", review=True)
        c2 = b.claim(in_review.id, worker="w", ttl=600)
        assert c2 is not None
        b.request_review(in_review.id, c2.run_id, summary="have a look")
        child, _ = b.create_task("child waits", parents=[running.id])
    spool.spool_report(paths, "complete", running.id, c.run_id, summary="ran")
    spool.spool_report(paths, "complete", late.id, late_run, summary="ran late")
    spool.spool_report(paths, "block", in_review.id, c2.run_id, summary="too late to block")
    with Board.open() as b:
        plan = {d.report.task_id: (d.proposed_action, d.reason, d.effect) for d in reconcile.plan(b)[0]}
        assert plan == {running.id: ("apply", "current_run", "review"), late.id: ("apply", "late_report", "review"),
                        in_review.id: ("skip", "review_gate_blocked", None)}
        result = reconcile.apply(b, backup=False)
        assert result.applied == 2
        d = b.detail(running.id)
        assert (d.task.status, d.task.summary, d.runs[-1].outcome) == ("review", "ran", "review_requested")
        assert d.task.lease_expires_at is None  # no lease left to expire: it will not run again
        assert b.get_task(late.id).status == "review"
        assert b.get_task(in_review.id).status == "review"
        assert b.get_task(child.id).status == "todo"  # review is not done: the child waits for the approval
        kinds = [e.kind for e in b.events(task_id=running.id)][-2:]
        assert kinds == ["review_requested", "reconciled"]
    assert [p.name for p in paths.spool_dir.glob("*.json")] == [spool.file_name(in_review.id, c2.run_id)]


# -- finding 4: the reconciled event -----------------------------------------------------------------------------------
def test_the_reconciled_event_has_iso_timestamps(paths):
    with Board.open() as b:
        t, _ = b.create_task("x")
        c = b.claim(t.id, worker="w", ttl=600)
        assert c is not None
    rep, _ = spool.spool_report(paths, "complete", t.id, c.run_id, summary="s")
    with Board.open() as b:
        reconcile.apply(b, backup=False)
        (ev,) = b.events(kinds=["reconciled"])
    assert ev.payload["spooled_at"] == iso(rep.spooled_at)
    assert ev.payload["spooled_at"].endswith("Z")


# -- finding 6: backups in the same millisecond ------------------------------------------------------------------------
def test_a_backup_name_taken_between_the_check_and_the_link_takes_the_next_name(paths):
    """Another backup taking the name first is simulated by names that exist only as dangling symlinks: exists()
    says no, link() says EEXIST, exactly the window two backups in the same millisecond race through. Every
    millisecond name of the next 30 s is taken that way (the backup starts well within it, even on a loaded machine)."""
    with Board.open() as b:
        b.create_task("x")
        paths.backups_dir.mkdir(mode=0o700, exist_ok=True)
        now = time.time()
        taken = set()
        for ms in range(-200, 30_000):
            name = f"kanban-{backups.backup_stamp(now + ms / 1000)}.db"
            if name not in taken:
                os.symlink(paths.backups_dir / "elsewhere" / name, paths.backups_dir / name)
                taken.add(name)
        info = backups.create(b)
    assert info.path.name.endswith("-1.db") and info.path.name.replace("-1.db", ".db") in taken
    assert info.path.is_file() and not info.path.is_symlink()
    assert all((paths.backups_dir / n).is_symlink() for n in taken)  # nobody's file was replaced
    assert [x.path for x in backups.list_backups(paths)] == [info.path]


def test_after_a_restore_a_report_of_a_run_the_backup_never_saw_applies_unless_a_person_acted_since(paths):
    with Board.open() as b:
        b.create_task("in the backup")
    assert hermes("backup").rc == 0
    with Board.open() as b:  # after the backup: two tasks claimed; their workers report while the board is down
        claims = {}
        for name in ("untouched", "blocked_by_hand"):
            t, _ = b.create_task(name)
            c = b.claim(t.id, worker="w", ttl=600)
            assert c is not None
            claims[name] = (t.id, c.run_id)
    for name, (tid, rid) in claims.items():
        spool.spool_report(paths, "complete", tid, rid, summary=f"finished {name}")
    checkpoint_and_close(paths.db)
    r = hermes("restore", "--latest", "--no-replay", "--json")
    assert r.rc == 0, r
    assert sorted(r.json["recreated_tasks"]) == sorted(t for t, _ in claims.values())
    assert hermes("block", claims["blocked_by_hand"][0], "not this one").rc == 0
    r = hermes("reconcile-completions", "--json")
    got = {x["task_id"]: (x["status"], x["proposed_action"], x["reason"]) for x in r.json}
    assert got == {claims["untouched"][0]: ("ready", "apply", "late_report"),
                   claims["blocked_by_hand"][0]: ("blocked", "conflict", "closed_by_other_action")}
    assert hermes("reconcile-completions", "--apply").rc == 3
    with Board.open() as b:
        assert b.get_task(claims["untouched"][0]).summary == "finished untouched"
        assert b.get_task(claims["blocked_by_hand"][0]).status == "blocked"
