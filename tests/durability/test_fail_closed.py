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


LIVE_WAL_WRITER = """
import sys
from hermes_cli.kanban import Board
b = Board.open()
b.db.conn.execute("PRAGMA wal_autocheckpoint=0")  # every commit stays in the -wal until somebody checkpoints
for i in range(int(sys.argv[1])):
    b.create_task(f"late {i}", body="y" * 300)
print("committed", flush=True)
sys.stdin.read()  # SIGKILLed here: the -wal and -shm stay as a crashed writer leaves them
"""


def wal_pages(wal: Path) -> set[int]:
    """Page numbers of every frame in a -wal file (32-byte header, then 24-byte frame header + page)."""
    data = wal.read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    return {int.from_bytes(data[off:off + 4], "big") for off in range(32, len(data) - 24, 24 + page_size)}


def fingerprint(db: Path) -> dict[str, str | None]:
    return {s: sha256(Path(f"{db}{s}")) if Path(f"{db}{s}").exists() else None for s in ("", "-wal", "-shm")}


def test_refused_board_with_a_live_wal_stays_byte_identical(paths, helper):
    """Issue 9 item 2: a writer is SIGKILLed over a non-empty -wal, then pages of the main file (not the WAL) are
    smashed. Every command that refuses the board, and an in-process open, leaves db, -wal and -shm byte-identical:
    no checkpoint on close, no -shm rebuilt, nothing deleted."""
    db = make_board(60)
    table_pages = pages_of(db, "tasks")
    writer = helper(LIVE_WAL_WRITER, "15", ready="committed")
    writer.kill()
    writer.wait()
    assert writer.stdin is not None
    writer.stdin.close()  # the helper fixture only closes stdin of a process still running
    wal = Path(f"{db}-wal")
    assert wal.exists() and wal.stat().st_size > 0, "the crashed writer left no -wal"
    victims = [p for p in table_pages if p not in wal_pages(wal) and p != 1][:2]
    assert victims, "every page of the table is in the -wal"
    smash_pages_live(db, victims)
    before = fingerprint(db)
    assert all(before.values()), before
    checks = [*READERS, ["doctor"], ["doctor", "--full"], ["repair"], ["heartbeat", "t_000000000000", "--run-id", "1"],
              ["complete", "t_000000000000", "--run-id", "1"], ["block", "t_000000000000", "why", "--run-id", "2"]]
    for args in checks:
        r = hermes(*args)
        assert r.rc != 0 or args[0] in ("complete", "block"), (args, r)  # reports spool (exit 0)
        assert "Traceback" not in r.err, (args, r.err)
        assert fingerprint(db) == before, f"`hermes kanban {' '.join(args)}` changed the board's files"
    with pytest.raises(CorruptBoard):
        Board.open()
    assert fingerprint(db) == before, "Board.open changed the board's files"


def smash_pages_live(db: Path, pages: list[int], page_size: int = 4096) -> None:
    """Like conftest.smash_pages, but with a crashed writer's -wal left in place (only the main file is hit)."""
    rnd = __import__("random").Random(11)
    with open(db, "r+b") as f:
        for p in pages:
            f.seek((p - 1) * page_size)
            f.write(bytes(rnd.randrange(256) for _ in range(page_size)))
        f.flush()
        os.fsync(f.fileno())
