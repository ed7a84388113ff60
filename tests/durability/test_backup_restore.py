"""backup / backups list / restore with real files and real processes holding the board."""

from __future__ import annotations

import os
from pathlib import Path

import apsw

from hermes_cli.kanban import Board
from hermes_cli.kanban.store import health as store_health

from .conftest import HOLD_OPEN, checkpoint_and_close, hermes


def make_board(n: int = 10) -> Path:
    with Board.open() as b:
        for i in range(n):
            b.create_task(f"task {i}")
        db = b.paths.db
    return db


def test_backup_is_verified_self_contained_and_rotated(paths):
    make_board(4)
    made = []
    for _ in range(4):
        r = hermes("backup", "--keep", "2", "--json")
        assert r.rc == 0, r
        made.append(Path(r.json["path"]))
        assert r.json["verified"] is True and r.json["tasks"] == 4
    kept = sorted(paths.backups_dir.glob("kanban-*.db"))
    assert kept == sorted(made[-2:])
    for p in kept:
        assert oct(p.stat().st_mode & 0o777) == "0o600"
        assert not Path(f"{p}-wal").exists()
        assert store_health.verify_file(p) == []
        conn = apsw.Connection(str(p), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] == "delete"
        finally:
            conn.close()
    r = hermes("backups", "list", "--json")
    assert [Path(b["path"]) for b in r.json] == list(reversed(made[-2:]))


def test_backup_output_path_and_refusals(paths, tmp_path):
    make_board(2)
    out = tmp_path / "b.db"
    r = hermes("backup", "--output", str(out))
    assert r.rc == 0 and out.exists()
    r = hermes("backup", "--output", str(out))
    assert r.rc == 1 and f"error: --output {out} already exists" in r.err
    r = hermes("backup", "--output", str(paths.db))
    assert r.rc == 1


def test_backup_while_a_writer_is_busy_is_consistent(paths):
    """Backups are online: a writer keeps committing in another process while we back up."""
    import subprocess
    import sys

    make_board(1)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom hermes_cli.kanban import Board\nb = Board.open()\n"
        "end = time.time() + 3\nwhile time.time() < end: b.create_task('w')\nb.close()")])
    try:
        for _ in range(3):
            r = hermes("backup", "--json")
            assert r.rc == 0, r
            assert store_health.verify_file(Path(r.json["path"])) == []
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == 0


def test_restore_refuses_while_a_process_holds_the_board(paths, helper):
    db = make_board(3)
    assert hermes("backup").rc == 0
    holder = helper(HOLD_OPEN, str(db), ready="open")
    r = hermes("restore", "--latest")
    assert r.rc == 3, r
    assert f"pid {holder.pid}" in r.err
    assert r.err.startswith("error: board default is open in 1 process(es)")
    assert not (paths.dir / "pre-restore").exists()


def test_restore_replaces_db_and_sidecars_and_keeps_ids_unique(paths):
    db = make_board(3)
    r = hermes("backup", "--json")
    backup = Path(r.json["path"])
    with Board.open() as b:
        t, _ = b.create_task("after the backup")
        c = b.claim(t.id, worker="w")
        assert c is not None
        b.complete(t.id, c.run_id, summary="landed after backup")
        last_run = c.run_id
        last_event = b.last_event_id()
    checkpoint_and_close(db)
    r = hermes("restore", str(backup), "--json")
    assert r.rc == 0, r
    res = r.json
    assert res["integrity_check"] == "ok"
    aside = Path(res["moved_aside"])
    assert (aside / "kanban.db").exists()
    # the task created after the backup was put back from the old board, and its completion with it
    assert res["salvaged"] == 1 and res["recreated_tasks"] == [t.id]
    # salvaged into the board's own spool (and replayed from there), not the host spool of a board that is gone
    filed = [f for sub in ("applied", "skipped") if (paths.spool_dir / sub).is_dir()
             for f in (paths.spool_dir / sub).iterdir()]
    assert len(filed) == 1 and not paths.host_spool_dir.exists(), filed
    with Board.open() as b:
        assert b.get_task(t.id).status == "done"
        assert b.get_task(t.id).summary == "landed after backup"
        # run ids (fencing tokens) and event ids (reader cursors) never go back
        t2, _ = b.create_task("new")
        c2 = b.claim(t2.id, worker="w")
        assert c2 is not None and c2.run_id > last_run
        assert b.last_event_id() > last_event


def test_restore_refuses_a_damaged_backup(paths, tmp_path):
    make_board(2)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"nope" * 1000)
    r = hermes("restore", str(bad))
    assert r.rc == 4, r
    assert f"error: backup {bad} failed integrity_check" in r.err
    r = hermes("restore")
    assert r.rc == 2 and "give either a BACKUP file or --latest" in r.err
    r = hermes("restore", "--latest")
    assert r.rc == 1 and "has no verified backup" in r.err
    assert os.path.exists(paths.db)


CLAIMER = """
import sys
from hermes_cli.kanban import Board
with Board.open() as b:
    c = b.claim(sys.argv[1], worker="newcomer")
    print(c.run_id, flush=True)
"""


def test_restore_installs_the_raised_run_id_floor_before_anyone_can_open_the_board(paths, monkeypatch):
    """Issue 9 item 1: the staged file carries the run/event id floor when it becomes visible. A real claimer (a
    separate process) opens the board at the first moment restore lets go of it, before any post-swap step; its run
    id must be one the old board never handed out, so the old worker's `complete` cannot close the newcomer's run."""
    import subprocess
    import sys

    db = make_board(1)
    with Board.open() as b:
        task = b.list_tasks()[0]
    backup = Path(hermes("backup", "--json").json["path"])
    with Board.open() as b:
        old = b.claim(task.id, worker="old worker")  # the old board hands out a run id the backup never saw
        assert old is not None
    checkpoint_and_close(db)

    from hermes_cli.kanban.durability import restore as backup_mod

    seen: list[int] = []
    real_forget = backup_mod.store_health.forget_check

    def claim_right_after_swap(p):  # the first call restore makes once the swapped-in file is at the board's path
        if not seen:
            out = subprocess.run([sys.executable, "-c", CLAIMER, task.id], capture_output=True, text=True,
                                 timeout=60, stdin=subprocess.DEVNULL)
            assert out.returncode == 0, out.stderr
            seen.append(int(out.stdout.strip()))
        real_forget(p)

    monkeypatch.setattr(backup_mod.store_health, "forget_check", claim_right_after_swap)
    backup_mod.restore(paths, backup)
    assert seen, "restore never reached the point after the swap"
    assert seen[0] > old.run_id, f"run id {seen[0]} was handed out again (the old board gave out {old.run_id})"
    # the old worker reports with its own token: it must not close the newcomer's run
    r = hermes("complete", task.id, "--run-id", str(old.run_id), "--summary", "stale", "--json")
    assert r.rc == 3, r
    with Board.open() as b:
        t = b.get_task(task.id)
        assert t.status == "running" and t.current_run_id == seen[0]
