"""Restore's refusals and its replay, pinned down where mutation testing (bench/mutation.sh backup,
docs/mutation.md) found that a change would go unnoticed: the schema range a backup must be in, and the replay of
spooled reports taking no backup of its own (the board was just restored from a verified one)."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from hermes_cli.kanban import Board, InvalidValue, spool
from hermes_cli.kanban import backup as backups
from hermes_cli.kanban.paths import BoardPaths
from hermes_cli.kanban.store.schema import LATEST


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
        backups.restore(paths, odd)
    assert paths.db.read_bytes() == before  # refused before anything was touched


def test_the_replay_after_a_restore_takes_no_backup_of_its_own(paths: BoardPaths) -> None:
    with Board.open() as b:
        t, _ = b.create_task("reported while the board was down")
        c = b.claim(t.id, worker="w", ttl=600)
        assert c is not None
        info = backups.create(b)
    spool.spool_report(paths, "complete", t.id, c.run_id, summary="done")
    taken = sorted(p.name for p in paths.backups_dir.glob("kanban-*.db"))
    result = backups.restore(paths, info.path)
    assert result.replay is not None and result.replay["applied"] == 1 and result.replay["backup"] is None
    assert sorted(p.name for p in paths.backups_dir.glob("kanban-*.db")) == taken
    with Board.open() as b:
        assert b.get_task(t.id).status == "done"
