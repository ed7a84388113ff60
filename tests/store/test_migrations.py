"""Migrations: a board written by every earlier schema version opens, upgrades to LATEST, keeps every row, and works.

Fixtures are tests/fixtures/schema_v<N>.db, made by tests/fixtures/make_fixtures.py. A new migration needs a new
fixture of the version before it: test_a_fixture_exists_for_every_older_version fails until it is committed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.store.schema import LATEST, MIGRATIONS

from .conftest import FIXTURES, dump_board

OLDER = list(range(1, LATEST))


def test_a_fixture_exists_for_every_older_version() -> None:
    missing = [v for v in OLDER if not (FIXTURES / f"schema_v{v}.db").is_file()]
    assert not missing, (
        f"no fixture for schema version(s) {missing}: run python tests/fixtures/make_fixtures.py and commit the file"
    )
    assert len(MIGRATIONS) == LATEST


def _copy_fixture(version: int, tmp_path: Path) -> Path:
    dest = tmp_path / "board" / "kanban.db"
    dest.parent.mkdir(mode=0o700)
    shutil.copyfile(FIXTURES / f"schema_v{version}.db", dest)
    dest.chmod(0o600)
    return dest


def _shape(db: Path) -> dict[str, object]:
    """Columns (name, type, notnull, default, pk) of every table and the set of index names."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")]
        out: dict[str, object] = {
            t: [tuple(c[1:]) for c in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables
        }
        out["__indexes__"] = sorted(
            r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='index' AND sql IS NOT NULL")
        )
        return out
    finally:
        conn.close()


def _rows(db: Path, table: str, columns: list[str]) -> list[tuple[object, ...]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        cols = ", ".join(f'"{c}"' for c in columns)
        return sorted(conn.execute(f'SELECT {cols} FROM "{table}"').fetchall(), key=repr)
    finally:
        conn.close()


@pytest.mark.parametrize("version", OLDER)
def test_upgrade_keeps_every_row_and_matches_a_fresh_board(version: int, tmp_path: Path) -> None:
    db = _copy_fixture(version, tmp_path)
    old = dump_board(db)
    assert old["__user_version__"] == version
    old_columns = {t: [c[0] for c in cols] for t, cols in _shape(db).items() if t != "__indexes__"}  # type: ignore[union-attr]

    with Board.open(db_path=str(db)) as b:
        assert b.db.value("PRAGMA user_version") == LATEST
        assert [r["version"] for r in b.db.rows("SELECT version FROM schema_migrations ORDER BY version")] == list(
            range(1, LATEST + 1)
        )
        assert b.db.value("PRAGMA integrity_check") == "ok"
        assert b.db.rows("PRAGMA foreign_key_check") == []

    # every row of every old table is still there, column for column (new columns may only be added)
    for table, columns in old_columns.items():
        if table in ("schema_migrations", "sqlite_sequence"):
            continue
        before = sorted(old[table], key=repr)
        assert _rows(db, table, columns) == before, table
    seq_after = dict(_rows(db, "sqlite_sequence", ["name", "seq"]))
    for name, seq in old["sqlite_sequence"]:
        assert seq_after[name] == seq, name  # AUTOINCREMENT counters survive: run ids are never reused

    with Board.open(db_path=str(tmp_path / "fresh" / "kanban.db")) as fresh:
        fresh_path = fresh.paths.db
    assert _shape(db) == _shape(fresh_path)


@pytest.mark.parametrize("version", OLDER)
def test_an_upgraded_board_works(version: int, tmp_path: Path) -> None:
    db = _copy_fixture(version, tmp_path)
    old = dump_board(db)
    old_max_event = max(r[0] for r in old["events"])
    old_max_run = max(r[0] for r in old["runs"])
    with Board.open(db_path=str(db)) as b:
        by_status = b.counts()
        assert sum(by_status.values()) == len(old["tasks"])

        # the expired run of the fixture is taken over by the next claim; new run ids continue the old sequence
        claims = []
        while (c := b.claim(worker="after-upgrade")) is not None:
            claims.append(c)
            assert c.run_id > old_max_run
            b.complete(c.task_id, c.run_id, summary="done after upgrade")
        assert claims, "the fixture has ready tasks"
        assert b.open_runs() == []
        assert b.db.value("SELECT count(*) FROM runs WHERE outcome = 'reclaimed'") >= 1

        # review tasks from before the upgrade can still be approved; children waiting on them get promoted
        for t in b.list_tasks(status="review"):
            assert b.approve(t.id).status == TaskStatus.DONE
        while (c := b.claim()) is not None:
            b.complete(c.task_id, c.run_id)
        assert b.list_tasks(status=["ready", "running", "todo", "review"]) == []

        # idempotency keys written by the old schema are still unique among live tasks; archived keys are free
        keyed = b.db.rows("SELECT id, idempotency_key, status FROM tasks WHERE idempotency_key IS NOT NULL")
        assert {r["status"] for r in keyed} >= {"archived"}
        for r in keyed:
            again, created = b.create_task("same key", idempotency_key=r["idempotency_key"])
            assert created == (r["status"] == "archived")
            if not created:
                assert again.id == r["id"]

        ev = b.events(old_max_event)
        assert ev and all(e.id > old_max_event for e in ev)
        assert b.db.value("PRAGMA integrity_check") == "ok"


def test_migrate_is_idempotent_and_a_fresh_board_is_latest() -> None:
    with Board.open() as b:
        path = b.paths.db
        assert b.db.value("PRAGMA user_version") == LATEST
    for _ in range(2):
        with Board.open() as b:
            assert b.db.value("SELECT count(*) FROM schema_migrations") == LATEST
    assert dump_board(path)["__user_version__"] == LATEST


OPENER = r"""
import sys
from hermes_cli.kanban import Board
sys.stdin.readline()  # start together
with Board.open(db_path=sys.argv[1]) as b:
    b.create_task("from " + sys.argv[2])
print("ok", flush=True)
"""


@pytest.mark.parametrize("start", ["fresh", "v1"])
def test_processes_opening_one_board_at_once_migrate_it_once(start: str, tmp_path: Path) -> None:
    """Four real processes open (and create or upgrade) the same board at the same moment."""
    if start == "fresh":
        db = tmp_path / "board" / "kanban.db"
    else:
        db = _copy_fixture(1, tmp_path)
    before = 0 if start == "fresh" else len(dump_board(db)["tasks"])
    procs = [
        subprocess.Popen([sys.executable, "-c", OPENER, str(db), str(i)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=60) for p in procs]
    assert [(p.returncode, out, err) for p, (out, err) in zip(procs, results, strict=True)] == [(0, "ok\n", "")] * 4
    after = dump_board(db)
    assert after["__user_version__"] == LATEST
    assert [r[0] for r in after["schema_migrations"]] == list(range(1, LATEST + 1))
    assert len(after["tasks"]) == before + 4
