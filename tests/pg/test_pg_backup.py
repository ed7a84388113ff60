"""`backup` of a PostgreSQL board writes a verified SQLite file, the same format as a SQLite board's backup: `backups
list` and `doctor` read it, `restore` into a SQLite board takes it, every row and id is in it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import apsw

from hermes_cli.kanban import Board

from ..cli.conftest import run_hermes


def _busy_board() -> dict[str, object]:
    """A board with a bit of everything: tasks in several statuses, a link, runs (one reclaimed), comments, events,
    a subscription and settings."""
    with Board.open() as b:
        parent = b.create_task("parent")[0]
        child = b.create_task("child", parents=[parent.id])[0]
        first = b.claim(parent.id, worker="w1", ttl=0.001)
        time.sleep(0.02)  # past that 1 ms lease by any clock
        assert first is not None
        second = b.claim(parent.id, worker="w2")  # the first lease expired: reclaimed, a new run
        assert second is not None and second.run_id > first.run_id
        b.comment(parent.id, "a comment", author="ana")
        b.complete(parent.id, second.run_id, summary="done")
        b.create_task("blocked")
        b.set_settings(name="Team board")
        tasks = {t.id: t.status for t in b.list_tasks()}
        return {"tasks": tasks, "child": child.id, "runs": [first.run_id, second.run_id],
                "last_event": b.db.value("SELECT max(id) FROM events")}


def test_backup_of_a_postgres_board_is_a_verified_sqlite_file(pg_url: str, hermes_home: Path) -> None:
    made = _busy_board()
    r = run_hermes("kanban", "backup", "--json")
    assert r.code == 0, r
    info = r.json()
    path = Path(info["path"])
    assert info["verified"] is True and path.parent.name == "backups" and path.is_file()
    assert (info["tasks"], info["last_event_id"]) == (len(made["tasks"]), made["last_event"])  # type: ignore[arg-type]
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("delete",)]
        assert dict(conn.execute("SELECT id, status FROM tasks").fetchall()) == made["tasks"]
        assert [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY id")] == made["runs"]
        # the copy's run sequence is at the board's high-water mark: a board restored from it never reuses a run id
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'runs'").fetchall()[0][0]
        assert seq >= max(made["runs"])  # type: ignore[type-var]
    finally:
        conn.close()
    assert os.stat(path).st_mode & 0o077 == 0
    listed = run_hermes("kanban", "backups", "list", "--json")
    assert listed.code == 0 and listed.json()[0]["path"] == str(path) and listed.json()[0]["verified"] is True
    doctor = run_hermes("kanban", "doctor", "--json")
    backup = next(f for f in doctor.json()["findings"] if f["check"] == "backup")
    assert backup["level"] == "ok" and backup["data"]["latest"] == str(path)
    # restore takes it as a SQLite board's backup: here into a SQLite board of another home
    other = hermes_home.parent / "other-home"
    restored = run_hermes("kanban", "--board", "copy", "restore", str(path), "--json",
                          env={"HERMES_HOME": str(other), "HERMES_KANBAN_URL": ""})
    assert restored.code == 0, restored
    shown = run_hermes("kanban", "--board", "copy", "list", "--json",
                       env={"HERMES_HOME": str(other), "HERMES_KANBAN_URL": ""})
    assert {t["id"]: t["status"] for t in shown.json()} == made["tasks"]


def test_restore_of_a_postgres_board_keeps_fencing_tokens_unique(pg_url: str, hermes_home: Path) -> None:
    with Board.open() as b:
        kept = b.create_task("in the backup")[0]
    backup = run_hermes("kanban", "backup", "--json")
    assert backup.code == 0, backup
    with Board.open() as b:  # after the backup: a task the backup does not have, and runs with higher ids
        late = b.create_task("after the backup")[0]
        stale = b.claim(kept.id, worker="old")
        assert stale is not None
        top_run = stale.run_id
        top_event = b.db.value("SELECT max(id) FROM events")
    r = run_hermes("kanban", "restore", backup.json()["path"], "--json")
    assert r.code == 0, r
    assert r.json()["board"] == pg_url and r.json()["id_floor"]["runs"] >= top_run
    board_dir = hermes_home / "kanban" / "boards" / "default"
    assert not (board_dir / "kanban.db").exists()  # still a PostgreSQL board, not a new SQLite file beside it
    with Board.open() as b:
        assert b.db.engine == "postgres"
        assert {t.id for t in b.list_tasks()} == {kept.id} and late.id not in {t.id for t in b.list_tasks()}
        assert b.get_task(kept.id).status == "ready"
    # the old worker's run is not on the restored board: refused; a new claim gets a run id above every old one
    refused = run_hermes("kanban", "complete", kept.id, "--run-id", str(top_run), "--json")
    assert refused.code == 3, refused
    claim = run_hermes("kanban", "claim", kept.id, "--json").json()
    assert claim["run_id"] > top_run
    with Board.open() as b:
        assert b.db.value("SELECT max(id) FROM events") > top_event
