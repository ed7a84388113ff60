"""Fail-closed open: not-a-database, truncated, empty and check-failing boards give exit 4 naming the file and the
next command; nothing is created over them; one quarantine copy per distinct content, bounded in count."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hermes_cli.kanban import Board, CorruptBoard
from hermes_cli.kanban.store import health as store_health

from .conftest import HOLD_WRITE_LOCK, checkpoint_and_close, hermes, pages_of, sha256, smash_pages

#: commands that open the board and must refuse a damaged one (complete/block spool instead: test_spool.py)
READERS = [
    ["list"], ["stats"], ["show", "t_000000000000"], ["create", "x"], ["claim"], ["events"],
    ["reconcile-completions"], ["backup"], ["init"],
]


def make_board(n: int = 30) -> Path:
    with Board.open() as b:
        for i in range(n):
            b.create_task(f"task {i}", body="x" * 300)
        db = b.paths.db
    checkpoint_and_close(db)
    return db


def quarantined(db: Path) -> list[Path]:
    q = db.parent / "quarantine"
    return sorted(p for p in q.glob("*.db")) if q.exists() else []


def test_not_a_database_fails_closed_everywhere_and_is_quarantined_once(paths):
    db = make_board(3)
    db.write_bytes(b"this is not sqlite at all\n" * 400)
    before = sha256(db)
    for args in READERS:
        r = hermes(*args)
        assert r.rc == 4, (args, r)
        assert f"error: board database {db} is not a database" in r.err
        assert "(see: hermes kanban doctor, then hermes kanban repair or hermes kanban restore --latest)" in r.err
        assert "Traceback" not in r.err
    r = hermes("list", "--json")
    assert r.rc == 4 and r.json["error"]["code"] == "corrupt"
    assert sha256(db) == before, "a damaged board must never be changed"
    copies = quarantined(db)
    assert len(copies) == 1, copies  # one copy for one content, not one per retry
    assert sha256(copies[0]) == before


def test_truncated_board_fails_closed(paths):
    db = make_board(60)
    size = db.stat().st_size
    os.truncate(db, size // 2 + 100)  # cut mid-page too
    before = sha256(db)
    r = hermes("list")
    assert r.rc == 4, r
    assert f"error: board database {db} is corrupt" in r.err
    assert sha256(db) == before
    assert len(quarantined(db)) == 1


def test_empty_file_is_refused_and_nothing_created_over_it(paths):
    db = make_board(1)
    os.truncate(db, 0)
    for args in (["list"], ["init"], ["create", "x"]):
        r = hermes(*args)
        assert r.rc == 4, (args, r)
        assert f"error: board database {db} is empty (0 bytes)" in r.err
    assert db.stat().st_size == 0


def test_smashed_table_page_fails_closed_with_the_next_step(paths):
    db = make_board(40)
    smash_pages(db, pages_of(db, "tasks")[:1])
    before = sha256(db)
    r = hermes("create", "after damage", "--json")
    assert r.rc == 4
    assert r.json["error"]["code"] == "corrupt"
    assert "quick_check" in r.json["error"]["message"]
    r = hermes("doctor", "--json")
    assert r.rc == 4
    integrity = next(f for f in r.json["findings"] if f["check"] == "integrity")
    assert integrity["level"] == "fail"
    assert integrity["next"] in ("hermes kanban backups list", "hermes kanban restore --latest")
    assert sha256(db) == before


def test_quarantine_is_bounded(paths):
    db = make_board(5)
    good = db.read_bytes()
    for i in range(store_health.QUARANTINE_MAX + 3):
        db.write_bytes(f"garbage {i} ".encode() * 500)
        assert hermes("list").rc == 4
    assert len(quarantined(db)) == store_health.QUARANTINE_MAX
    db.write_bytes(good)
    assert hermes("list").rc == 0


def test_fail_closed_in_process_raises_corrupt_board(paths):
    db = make_board(5)
    smash_pages(db, pages_of(db, "tasks"))
    with pytest.raises(CorruptBoard, match="quick_check"):
        Board.open()


def test_busy_is_never_corruption(paths, helper):
    db = make_board(5)
    helper(HOLD_WRITE_LOCK, str(db), ready="locked")
    r = hermes("list", "--json")
    assert r.rc == 0, r
    assert len(r.json) == 5
    assert quarantined(db) == []


def test_quick_check_is_remembered_per_file_state(paths):
    db = make_board(5)
    assert hermes("list").rc == 0
    cache = store_health.check_cache_path(paths)
    assert cache == db.parent / ".kanban.db.quick_check.json"
    assert cache.exists()
    key = store_health.db_key(db)
    assert key is not None and store_health.cached_ok(paths, key)
    # the same bytes under a new inode (a copy moved into place) are checked again: the key is not the content
    shutil.copyfile(db, db.with_suffix(".copy"))
    os.replace(db.with_suffix(".copy"), db)
    assert not store_health.cached_ok(paths, store_health.db_key(db) or [])
