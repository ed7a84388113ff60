"""Restore's refusals and its replay, pinned down where mutation testing (bench/mutation.sh backup,
docs/mutation.md) found that a change would go unnoticed: the schema range a backup must be in, and the replay of
spooled reports taking no backup of its own (the board was just restored from a verified one)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import apsw
import pytest

from hermes_cli.kanban import Board, Conflict, InvalidValue, NotFound
from hermes_cli.kanban.core.paths import BoardPaths
from hermes_cli.kanban.durability import backup as backups
from hermes_cli.kanban.durability import restore as restores
from hermes_cli.kanban.durability import spool
from hermes_cli.kanban.store.schema import LATEST

from .conftest import checkpoint_and_close, pages_of, smash_pages


def with_user_version(src: Path, dst: Path, version: int) -> Path:
    dst.write_bytes(src.read_bytes())
    conn = apsw.Connection(str(dst))
    try:
        conn.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        conn.close()
    return dst


@pytest.mark.parametrize("version", [0, LATEST + 1])
def test_a_backup_outside_the_readable_schema_range_is_refused(paths: BoardPaths, tmp_path: Path,
                                                              version: int) -> None:
    with Board.open() as b:
        b.create_task("x")
        info = backups.create(b)
    before = paths.db.read_bytes()
    odd = with_user_version(info.path, tmp_path / "odd.db", version)
    with pytest.raises(InvalidValue, match=rf"has schema v{version}; this hermes reads v1..v{LATEST}$"):
        restores.restore(paths, odd)
    assert paths.db.read_bytes() == before  # refused before anything was touched


def test_the_replay_after_a_restore_takes_no_backup_of_its_own(paths: BoardPaths) -> None:
    with Board.open() as b:
        t, _ = b.create_task("reported while the board was down")
        c = b.claim(t.id, worker="w", ttl=600)
        assert c is not None
        info = backups.create(b)
    spool.spool_report(paths, "complete", t.id, c.run_id, summary="done")
    taken = sorted(p.name for p in paths.backups_dir.glob("kanban-*.db"))
    result = restores.restore(paths, info.path)
    assert result.replay is not None and result.replay["applied"] == 1 and result.replay["backup"] is None
    assert sorted(p.name for p in paths.backups_dir.glob("kanban-*.db")) == taken
    with Board.open() as b:
        assert b.get_task(t.id).status == "done"


def test_a_sqlite_file_that_is_not_a_board_is_refused(paths: BoardPaths, tmp_path: Path) -> None:
    with Board.open() as b:
        b.create_task("x")
    other = tmp_path / "other.db"
    conn = apsw.Connection(str(other))
    try:
        conn.execute("CREATE TABLE notes(x)")
    finally:
        conn.close()
    with pytest.raises(InvalidValue, match=rf"^{other} is not a hermes board backup \(no such table: tasks\)$"):
        restores.restore(paths, other)


def test_run_ids_of_spooled_reports_are_never_handed_out_again_after_a_restore(paths: BoardPaths) -> None:
    """The board is lost after the backup (nothing to read run ids from) while a report of a later run waits in the
    spool: the restored board must not hand that run id out to a new claim, or the stale report would match it."""
    with Board.open() as b:
        first, _ = b.create_task("in the backup")
        assert b.claim(first.id, worker="w", ttl=600) is not None
        info = backups.create(b)
        late, _ = b.create_task("after the backup")
        c = b.claim(late.id, worker="w", ttl=600)
        assert c is not None
    spool.spool_report(paths, "complete", late.id, c.run_id, summary="reported while the board was down")
    for p in (paths.db, *paths.sidecars):
        p.unlink(missing_ok=True)  # the board is gone: restore has no old board to salvage ids from
    result = restores.restore(paths, info.path, replay=False)
    assert result.id_floor["runs"] >= c.run_id
    with Board.open() as b:
        again, _ = b.create_task("new work")
        fresh = b.claim(again.id, worker="w")
        assert fresh is not None and fresh.run_id > c.run_id


HOLD_LOCK_VIA_ALIAS = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_SH, int(sys.argv[3]), int(sys.argv[2]))
print("locked", flush=True)
sys.stdin.read()
"""


def test_restore_refuses_a_lock_holder_it_cannot_see(paths: BoardPaths, tmp_path: Path, helper: Any) -> None:
    """A process that holds SQLite's shared lock through another name for the file (a hard link here; in real life
    another PID namespace or a process we may not inspect) is not found by the open-files scan: the try-lock on the
    lock bytes still refuses the restore, with a Conflict, and the board is left as it was."""
    with Board.open() as b:
        b.create_task("x")
        info = backups.create(b)
    alias = tmp_path / "alias.db"
    os.link(paths.db, alias)
    helper(HOLD_LOCK_VIA_ALIAS, str(alias), str(restores._SHARED_FIRST), str(restores._SHARED_SIZE), ready="locked")
    before = paths.db.read_bytes()
    with pytest.raises(Conflict, match=rf"another process holds a SQLite lock on {paths.db}; stop every process"):
        restores.restore(paths, info.path)
    assert paths.db.read_bytes() == before


def test_sidecars_left_without_their_database_are_moved_aside_but_are_no_old_board(paths: BoardPaths) -> None:
    with Board.open() as b:
        b.create_task("x")
        info = backups.create(b)
    paths.db.unlink()
    wal = paths.sidecars[0]
    wal.write_bytes(b"left behind")
    result = restores.restore(paths, info.path, replay=False)
    assert result.salvage_note == "no old board"
    assert result.moved_aside is not None and (result.moved_aside / wal.name).read_bytes() == b"left behind"


def test_a_damaged_old_board_is_salvaged_as_far_as_it_reads_and_the_note_says_where_it_stopped(
    paths: BoardPaths,
) -> None:
    with Board.open() as b:
        info = backups.create(b)
        for i in range(40):
            b.create_task(f"after the backup {i}", body="x" * 400)  # several pages of tasks
    checkpoint_and_close(paths.db)
    smash_pages(paths.db, pages_of(paths.db, "tasks")[1:])  # the events still read, the tasks stop early
    result = restores.restore(paths, info.path, replay=False)
    assert result.salvage_note.startswith("tasks: stopped early: "), result.salvage_note


def test_a_missing_backup_is_not_found(paths: BoardPaths, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=rf"^backup {tmp_path / 'missing.db'} does not exist"):
        restores.restore(paths, tmp_path / "missing.db")


HOLD_RESTORE_LOCK = """
import sys
from hermes_cli.kanban.core.locks import file_lock
with file_lock(sys.argv[1], wait=False):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_restore_of_the_same_board_waits_for_none(paths: BoardPaths, helper: Any) -> None:
    with Board.open() as b:
        b.create_task("x")
        info = backups.create(b)
    before = paths.db.read_bytes()
    helper(HOLD_RESTORE_LOCK, str(paths.dir / ".restore.lock"), ready="locked")  # a restore in progress
    with pytest.raises(Conflict, match=r"^another restore of board default is running; wait for it$"):
        restores.restore(paths, info.path)
    assert paths.db.read_bytes() == before


def test_the_restore_lock_file_is_private(paths: BoardPaths) -> None:
    with Board.open() as b:
        info = backups.create(b)
    restores.restore(paths, info.path, replay=False)
    lock = paths.dir / ".restore.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600  # the lock file stays in place for the next restore


def test_an_unreadable_old_board_makes_restore_skip_far_past_the_backups_ids(paths: BoardPaths) -> None:
    with Board.open() as b:
        t, _ = b.create_task("x")
        c = b.claim(t.id, worker="w")
        assert c is not None
        info = backups.create(b)
    checkpoint_and_close(paths.db)
    paths.db.write_bytes(b"not a database at all" * 500)  # nothing to read the old board's highest ids from
    result = restores.restore(paths, info.path, replay=False)
    assert "max(runs.id) unreadable" in result.salvage_note
    assert result.id_floor["runs"] >= c.run_id + restores.UNKNOWN_ID_GAP


def test_a_restore_leaves_no_file_descriptor_open(paths: BoardPaths) -> None:
    with Board.open() as b:
        b.create_task("x")
        info = backups.create(b)
    before = len(os.listdir("/proc/self/fd"))
    restores.restore(paths, info.path, replay=False)
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_schema_v1_backup_is_restored(paths: BoardPaths, tmp_path: Path) -> None:
    v1 = tmp_path / "v1.db"
    v1.write_bytes((Path(__file__).resolve().parent.parent / "fixtures" / "schema_v1.db").read_bytes())
    with Board.open():
        pass
    result = restores.restore(paths, v1, replay=False)
    assert result.integrity_check == "ok"


def test_a_salvaged_report_that_conflicts_with_a_spooled_one_is_skipped_and_the_others_are_kept(
    paths: BoardPaths,
) -> None:
    with Board.open() as b:
        first, _ = b.create_task("first")
        second, _ = b.create_task("second")
        c1 = b.claim(first.id, worker="w", ttl=600)
        c2 = b.claim(second.id, worker="w", ttl=600)
        assert c1 is not None and c2 is not None
        info = backups.create(b)
        b.complete(first.id, c1.run_id, summary="on the old board")  # logged after the backup: salvaged
        b.complete(second.id, c2.run_id, summary="on the old board too")
    spool.spool_report(paths, "complete", first.id, c1.run_id, summary="a different report, spooled first")
    result = restores.restore(paths, info.path, replay=False)
    assert result.salvaged == 1  # the second; the first's spooled report wins
    reports, _ = spool.pending(paths)
    assert sorted((r.task_id, r.summary) for r in reports) == sorted(
        [(first.id, "a different report, spooled first"), (second.id, "on the old board too")])
