"""The spool drill: make the board unwritable three real ways while worker processes complete; every completion
lands in the spool; reconcile-completions proposes the right action for each; --apply applies them once; a second
--apply changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest

from hermes_cli.kanban import Board, StorageError
from hermes_cli.kanban.core.paths import BoardPaths
from hermes_cli.kanban.durability import drain, spool

from .conftest import HOLD_WRITE_LOCK, checkpoint_and_close, hermes, pages_of, smash_pages, stop

SHORT_TTL = 1.0
LONG_TTL = 600.0


def dump(db: Path) -> dict[str, Any]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("tasks", "runs", "events")}
    finally:
        conn.close()


def setup_board() -> tuple[dict[str, tuple[str, int]], Path]:
    """Seven tasks, each claimed: name -> (task_id, run_id)."""
    claims: dict[str, tuple[str, int]] = {}
    with Board.open() as b:
        for name in "ABCDEFG":
            t, _ = b.create_task(f"task {name}", review=(name == "D"))
            c = b.claim(t.id, worker=f"w{name}", ttl=SHORT_TTL if name in "BC" else LONG_TTL)
            assert c is not None
            claims[name] = (t.id, c.run_id)
        db = b.paths.db
    checkpoint_and_close(db)
    return claims, db


@contextmanager
def reaped(procs: list[subprocess.Popen[str]]) -> Iterator[list[subprocess.Popen[str]]]:
    """Whatever happens in the block (a failed assertion on the first process included), every process in `procs`
    is killed if still running, waited for and its pipes closed: an unreaped Popen is a ResourceWarning at its
    garbage collection, which `filterwarnings = error` turns into a failure of whichever test runs then."""
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()  # reaps it and closes its pipes, whether or not it was read before


def run_workers(claims: dict[str, tuple[str, int]], env: dict[str, str]) -> list[dict[str, Any]]:
    """One real worker process per task reporting through the CLI, all at once (G blocks, the others complete)."""
    with reaped([]) as procs:
        for name, (task_id, run_id) in claims.items():
            verb = ["block", "--json"] if name == "G" else ["complete", "--summary", f"did {name}", "--json"]
            wenv = {**os.environ, **env, "HERMES_KANBAN_TASK": task_id, "HERMES_KANBAN_RUN_ID": str(run_id)}
            if name == "G":
                verb = ["block", task_id, "needs a key", "--json"]
            procs.append(subprocess.Popen([sys.executable, "-m", "hermes_cli.main", "kanban", *verb], env=wenv,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          stdin=subprocess.DEVNULL))
        out = []
        for p in procs:
            o, e = p.communicate(timeout=60)
            assert p.returncode == 0, (o, e)
            assert e.startswith("warning: ") and "was spooled to" in e, e
            out.append(json.loads(o))
        return out


def settle_states(claims: dict[str, tuple[str, int]]) -> None:
    """After the board is writable again, move the tasks into the situations the drill checks."""
    expiry = time.time()
    with Board.open() as b:
        for name in "BC":
            lease = b.get_task(claims[name][0]).lease_expires_at
            assert lease is not None
            expiry = max(expiry, lease)
        time.sleep(max(0.0, expiry - time.time() + 0.05))
        reclaimed = {t.id for t in b.reclaim_expired()}
        assert reclaimed == {claims["B"][0], claims["C"][0]}
        other = b.claim(claims["C"][0], worker="someone else", ttl=LONG_TTL)  # C: another run holds it now
        assert other is not None and other.run_id != claims["C"][1]
        b.complete(claims["E"][0], summary="done by hand", force=True)  # E: a person finished it meanwhile
        b.archive(claims["F"][0])  # F: put away meanwhile


EXPECTED = {
    "A": ("running", "apply", "current_run"),
    "B": ("ready", "apply", "late_report"),
    "C": ("running", "conflict", "active_claim_by_other_run"),
    "D": ("running", "apply", "current_run"),  # review-gated: applying puts it in review, as `complete` would
    "E": ("done", "skip", "already_done"),
    "F": ("archived", "skip", "archived"),
    "G": ("running", "apply", "current_run"),
}


def reconcile_and_check(paths: BoardPaths, claims: dict[str, tuple[str, int]]) -> None:
    by_task = {tid: name for name, (tid, _) in claims.items()}
    r = hermes("reconcile-completions", "--dry-run", "--json")
    assert r.rc == 0, r
    got = {by_task[rec["task_id"]]: (rec["status"], rec["proposed_action"], rec["reason"]) for rec in r.json}
    assert got == EXPECTED
    for rec in r.json:
        assert rec["run_id"] == claims[by_task[rec["task_id"]]][1]

    backups_before = len(list(paths.backups_dir.glob("kanban-*.db")))
    r = hermes("reconcile-completions", "--apply", "--json")
    assert r.rc == 3, r  # C still conflicts
    assert r.json["applied"] == 4 and r.json["conflicts"] == 1
    assert r.json["backup"] and Path(r.json["backup"]).exists()
    assert len(list(paths.backups_dir.glob("kanban-*.db"))) == backups_before + 1
    with Board.open() as b:
        assert b.get_task(claims["A"][0]).status == "done" and b.get_task(claims["A"][0]).summary == "did A"
        assert b.get_task(claims["B"][0]).status == "done" and b.get_task(claims["B"][0]).summary == "did B"
        assert b.get_task(claims["G"][0]).status == "blocked"
        assert b.get_task(claims["C"][0]).status == "running"  # the other run's claim is untouched
        d = b.detail(claims["D"][0])  # the review gate holds: the report puts D in review, a person approves
        assert (d.task.status, d.task.summary, d.runs[-1].outcome) == ("review", "did D", "review_requested")
        assert len(b.events(kinds=["reconciled"])) == 4
    assert sorted(p.name for p in (paths.spool_dir / "applied").iterdir()) == sorted(
        spool.file_name(*claims[n]) for n in "ABDG")
    assert sorted(p.name for p in (paths.spool_dir / "skipped").iterdir()) == sorted(
        spool.file_name(*claims[n]) for n in "EF")
    assert [p.name for p in paths.spool_dir.glob("*.json")] == [spool.file_name(*claims["C"])]

    before = dump(paths.db)
    r = hermes("reconcile-completions", "--apply", "--json")
    assert r.rc == 3 and r.json["applied"] == 0
    assert dump(paths.db) == before, "a second --apply must change nothing"
    assert len(list(paths.backups_dir.glob("kanban-*.db"))) == backups_before + 1  # nothing to apply: no backup

    conn = apsw.Connection(str(paths.db))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def check_spooled(paths: BoardPaths, claims: dict[str, tuple[str, int]], outs: list[dict[str, Any]]) -> None:
    assert all(o["spooled"] is True for o in outs)
    files = sorted(p.name for p in paths.spool_dir.glob("*.json"))
    assert files == sorted(spool.file_name(t, r) for t, r in claims.values())
    for p in paths.spool_dir.glob("*.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.spool_dir.stat().st_mode) == 0o700


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_spool_drill_write_lock_held(paths, helper):
    claims, db = setup_board()
    holder = helper(HOLD_WRITE_LOCK, str(db), ready="locked")
    outs = run_workers(claims, {"HERMES_KANBAN_BUSY_TIMEOUT_MS": "50"})
    assert {o["error"]["code"] for o in outs} == {"busy"}
    check_spooled(paths, claims, outs)
    stop(holder)
    settle_states(claims)
    reconcile_and_check(paths, claims)


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_spool_drill_read_only_file(paths):
    """Root ignores file modes, so the db is made immutable (chattr +i): no process, root included, can write it."""
    claims, db = setup_board()
    if shutil.which("chattr") is None or not _chattr("+i", db):
        pytest.skip("chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE on ext2/3/4, xfs, btrfs)")
    try:
        outs = run_workers(claims, {})
    finally:
        assert _chattr("-i", db)
    assert {o["error"]["code"] for o in outs} <= {"read_only", "storage"}
    check_spooled(paths, claims, outs)
    settle_states(claims)
    reconcile_and_check(paths, claims)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_spool_drill_corrupt_file(paths):
    claims, db = setup_board()
    assert hermes("backup").rc == 0  # the claims are in the backup
    smash_pages(db, pages_of(db, "tasks"))
    outs = run_workers(claims, {})
    assert {o["error"]["code"] for o in outs} == {"corrupt"}
    check_spooled(paths, claims, outs)
    r = hermes("restore", "--latest", "--no-replay", "--json")
    assert r.rc == 0, r
    settle_states(claims)
    reconcile_and_check(paths, claims)


# -- the spool itself --------------------------------------------------------------------------------------------------
def test_same_report_twice_is_one_file_and_a_different_one_conflicts(paths):
    with Board.open() as b:
        t, _ = b.create_task("x")
    err = StorageError("disk on fire")
    r1, wrote1 = spool.spool_report(paths, "complete", t.id, 5, summary="s", error=err)
    r2, wrote2 = spool.spool_report(paths, "complete", t.id, 5, summary="s", error=err)
    assert wrote1 and not wrote2 and r1.path == r2.path
    from hermes_cli.kanban import Conflict

    with pytest.raises(Conflict, match="a different complete report"):
        spool.spool_report(paths, "complete", t.id, 5, summary="other")
    assert [p.name for p in paths.spool_dir.iterdir()] == [spool.file_name(t.id, 5)]


def test_symlinks_in_the_spool_are_refused(paths, tmp_path):
    with Board.open() as b:
        t, _ = b.create_task("x")
    paths.spool_dir.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"kind": "complete", "task_id": t.id, "run_id": 1}))
    os.symlink(target, paths.spool_dir / spool.file_name(t.id, 1))
    reports, bad = spool.pending(paths)
    assert reports == [] and len(bad) == 1 and "cannot open" in bad[0]["problem"]
    r = hermes("reconcile-completions")
    assert r.rc == 0 and "is not a valid spool report (cannot open" in r.err
    shutil.rmtree(paths.spool_dir)
    os.symlink(tmp_path, paths.spool_dir)
    with pytest.raises(StorageError, match="symlink"):
        spool.spool_report(paths, "complete", t.id, 1)


def test_unknown_task_and_manual_reports(paths):
    with Board.open() as b:
        t, _ = b.create_task("ready one")
    spool.spool_report(paths, "complete", "t_0123456789ab", 3, summary="from another board")
    spool.spool_report(paths, "complete", t.id, None, summary="by hand")
    r = hermes("reconcile-completions", "--json")
    got = {rec["task_id"]: (rec["proposed_action"], rec["reason"]) for rec in r.json}
    assert got == {"t_0123456789ab": ("skip", "unknown_task"), t.id: ("apply", "manual_report")}
    r = hermes("reconcile-completions", "--apply", "--json")
    assert r.rc == 0 and r.json["applied"] == 1
    assert [p.name for p in paths.spool_dir.glob("*.json")] == [spool.file_name("t_0123456789ab", 3)]


def test_bad_input_is_never_spooled(paths):
    r = hermes("complete", "not-a-task-id")
    assert r.rc == 1 and r.err.startswith("error: invalid task id")
    assert not paths.spool_dir.exists()


def test_drain_if_healthy(paths):
    with Board.open() as b:
        t, _ = b.create_task("x")
        c = b.claim(t.id, worker="w")
        assert c is not None
        assert drain.drain_if_healthy(b) == 0  # empty spool: nothing to do
        spool.spool_report(paths, "complete", t.id, c.run_id, summary="late but done")
        assert drain.drain_if_healthy(b) == 1
        assert b.get_task(t.id).status == "done"
        assert drain.drain_if_healthy(b) == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_dispatcher_drains_the_spool_when_healthy(paths):
    with Board.open() as b:
        t, _ = b.create_task("reported while the board was busy")
        c = b.claim(t.id, worker="outside", ttl=LONG_TTL)
        assert c is not None
    spool.spool_report(paths, "complete", t.id, c.run_id, summary="spooled earlier",
                       error=StorageError("board stayed locked"))
    r = hermes("dispatch", "--once", "--timeout", "20s", "-q")
    assert r.rc == 0, r
    with Board.open() as b:
        task = b.get_task(t.id)
        assert (task.status, task.summary) == ("done", "spooled earlier")
        assert [e.payload["reason"] for e in b.events(kinds=["reconciled"])] == ["current_run"]
    assert [p.name for p in (paths.spool_dir / "applied").iterdir()] == [spool.file_name(t.id, c.run_id)]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_two_concurrent_applies_apply_each_report_once(paths):
    with Board.open() as b:
        claims = []
        for i in range(10):
            t, _ = b.create_task(f"t{i}")
            c = b.claim(t.id, worker="w", ttl=LONG_TTL)
            assert c is not None
            claims.append((t.id, c.run_id))
    for tid, rid in claims:
        spool.spool_report(paths, "complete", tid, rid, summary="s")
    cmd = [sys.executable, "-m", "hermes_cli.main", "kanban", "reconcile-completions", "--apply", "--json"]
    with reaped([]) as procs:
        procs.extend(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
        results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert sum(json.loads(out)["applied"] for out, _ in results) == 10
    with Board.open() as b:
        assert sorted(e.task_id for e in b.events(kinds=["reconciled"])) == sorted(t for t, _ in claims)
        assert all(b.get_task(t).status == "done" for t, _ in claims)
    assert list(paths.spool_dir.glob("*.json")) == []
