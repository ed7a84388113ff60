"""`repair`: index-only damage is healed with REINDEX and re-checked; anything else is refused with guidance."""

from __future__ import annotations

from pathlib import Path

import apsw

from hermes_cli.kanban import Board

from .conftest import checkpoint_and_close, hermes, pages_of, sha256, smash_pages


def make_board(n: int = 40) -> Path:
    with Board.open() as b:
        for i in range(n):
            b.create_task(f"task {i}", priority=i % 5)
        db = b.paths.db
    checkpoint_and_close(db)
    return db


def desync_index(db: Path, index: str = "tasks_claim_order") -> None:
    """Make an index disagree with its table, the way the hermes #34385/#74423 boards did ("row N missing from
    index", "wrong # of entries"): the index is hidden from the schema while rows change, then put back."""
    conn = apsw.Connection(str(db))
    try:
        row = conn.execute("SELECT type, name, tbl_name, rootpage, sql FROM sqlite_schema WHERE name = ?",
                           (index,)).fetchall()[0]
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("DELETE FROM sqlite_schema WHERE name = ?", (index,))
    finally:
        conn.close()
    conn = apsw.Connection(str(db))
    try:
        conn.execute("UPDATE tasks SET priority = priority + 7 WHERE rowid % 3 = 0")
        conn.execute("DELETE FROM tasks WHERE rowid % 11 = 0")
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("INSERT INTO sqlite_schema(type, name, tbl_name, rootpage, sql) VALUES (?, ?, ?, ?, ?)", row)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


def test_index_only_damage_is_found_by_doctor_full_and_healed_by_repair(paths):
    db = make_board()
    desync_index(db)
    r = hermes("doctor", "--full", "--json")
    assert r.rc == 4, r
    integrity = next(f for f in r.json["findings"] if f["check"] == "integrity")
    assert integrity["level"] == "fail"
    assert integrity["next"] == "hermes kanban repair"
    assert integrity["data"]["indexes"] == ["tasks_claim_order"]
    assert any("missing from index tasks_claim_order" in p or "wrong # of entries in index tasks_claim_order" in p
               for p in integrity["data"]["problems"])

    r = hermes("repair", "--json")
    assert r.rc == 0, r
    assert r.json["status"] == "repaired"
    assert r.json["reindexed"] == ["tasks_claim_order"]
    assert r.json["quarantine"] and Path(r.json["quarantine"]).exists()

    r = hermes("doctor", "--full", "--json")
    assert next(f for f in r.json["findings"] if f["check"] == "integrity")["level"] == "ok"
    r = hermes("repair", "--json")
    assert r.rc == 0 and r.json["status"] == "ok"


def test_table_damage_is_refused_and_changes_nothing(paths):
    db = make_board()
    smash_pages(db, pages_of(db, "tasks")[:1])
    before = sha256(db)
    r = hermes("repair")
    assert r.rc == 4, r
    assert r.err.startswith(f"error: board {db} has damage beyond its indexes")
    assert "repair refused, nothing changed" in r.err
    assert "(see: hermes kanban backups list)" in r.err
    assert sha256(db) == before


def test_unreadable_index_page_is_refused_when_reindex_cannot_heal_it(paths):
    db = make_board()
    hermes("backup")
    smash_pages(db, pages_of(db, "tasks_claim_order")[:1])
    before = sha256(db)
    r = hermes("repair")
    assert r.rc == 4, r
    assert "REINDEX of tasks_claim_order failed" in r.err or "damage beyond its indexes" in r.err
    assert "(see: hermes kanban restore --latest)" in r.err
    assert sha256(db) == before


def test_repair_on_a_healthy_board_does_nothing(paths):
    db = make_board(3)
    before = sha256(db)
    r = hermes("repair")
    assert r.rc == 0
    assert "nothing to repair" in r.out
    assert sha256(db) == before
