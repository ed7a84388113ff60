"""`boards migrate SLUG --to URL|sqlite`: all the history moves, no run id or event id is reused after a move, a stale
worker is still refused, and a move that fails leaves the source as it was."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from hermes_cli.kanban import Board

from ..boarddump import dump_board, dump_pg_board
from ..cli.conftest import run_hermes

TABLES = ("tasks", "links", "runs", "comments", "events", "subscriptions", "meta")


def _history() -> dict[str, Any]:
    """A board with every kind of row; returns its running task with its live run and the run a stale worker holds."""
    with Board.open() as b:
        parent = b.create_task("parent", idempotency_key="k1")[0]
        b.create_task("child", parents=[parent.id])
        stale = b.claim(parent.id, worker="old", ttl=0.001)
        time.sleep(0.02)  # past that 1 ms lease by any clock
        assert stale is not None
        live = b.claim(parent.id, worker="new", ttl="1h")  # the first lease expired: reclaimed, a new run
        assert live is not None and live.run_id > stale.run_id
        b.comment(parent.id, "a note", author="ana")
        done = b.create_task("done one")[0]
        b.complete(done.id, summary="ok")
        b.create_task("ready one")
        b.set_settings(name="Moved board")
    assert run_hermes("kanban", "notify-subscribe", "watcher", "--json").code == 0
    return {"task": parent.id, "stale_run": stale.run_id, "live_run": live.run_id}


def _rows(b: Board) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for t in TABLES:
        cols = "key, value" if t == "meta" else "*"
        rows = b.db.rows(f"SELECT {cols} FROM {t}")
        out[t] = sorted((tuple(r.items()) for r in rows if not (t == "meta" and r["key"] == "board_slug")), key=repr)
    out["runs"] = [tuple(kv for kv in r if kv[0] != "dispatcher_id") for r in out["runs"]]
    return out


def _after_move_checks(h: dict[str, Any], before_max: dict[str, int]) -> None:
    # a worker holding the reclaimed run is refused (exit 3), nothing changed
    stale = run_hermes("kanban", "complete", h["task"], "--run-id", str(h["stale_run"]), "--json")
    assert stale.code == 3 and json.loads(stale.out)["error"]["code"] == "stale_run", stale
    # the live run still reports
    beat = run_hermes("kanban", "heartbeat", h["task"], "--run-id", str(h["live_run"]))
    assert beat.code == 0, beat
    # a claim after the move gets a run id above every old one; new events come after every old one
    new = run_hermes("kanban", "create", "after the move", "--json").json()["id"]
    claim = run_hermes("kanban", "claim", new, "--json").json()
    assert claim["run_id"] > before_max["runs"], (claim, before_max)
    with Board.open() as b:
        first_new_event = b.db.value("SELECT min(id) FROM events WHERE task_id = ?", (new,))
        assert first_new_event > before_max["events"]


def _maxima(b: Board) -> dict[str, int]:
    return {t: int(b.db.value(f"SELECT coalesce(max(id), 0) FROM {t}")) for t in ("runs", "events", "comments")}


def test_sqlite_to_postgres_and_back_keeps_everything(pg_db: str, hermes_home: Path) -> None:
    h = _history()
    with Board.open() as b:
        assert b.db.engine == "sqlite"
        rows, top = _rows(b), _maxima(b)
    r = run_hermes("kanban", "boards", "migrate", "default", "--to", pg_db, "--json")
    assert r.code == 0, r
    out = r.json()
    assert (out["from"], out["to"]) == (str(hermes_home / "kanban/boards/default/kanban.db"), pg_db)
    assert out["rows"]["tasks"] == len(rows["tasks"]) and out["rows"]["events"] == len(rows["events"])
    board_dir = hermes_home / "kanban" / "boards" / "default"
    assert not (board_dir / "kanban.db").exists() and (Path(out["moved_aside"]) / "kanban.db").is_file()
    with Board.open() as b:
        assert b.db.engine == "postgres"
        assert _rows(b) == rows
    _after_move_checks(h, top)

    with Board.open() as b:
        rows, top = _rows(b), _maxima(b)
    back = run_hermes("kanban", "boards", "migrate", "default", "--to", "sqlite", "--json")
    assert back.code == 0, back
    assert "hkmoved_" in back.json()["moved_aside"]
    assert not (board_dir / "postgres.url").exists()
    with Board.open() as b:
        assert b.db.engine == "sqlite" and _rows(b) == rows
        assert b.db.value("PRAGMA integrity_check") == "ok"
    _after_move_checks(h, top)
    # the old schema is gone from the board's name: no host can write the board in PostgreSQL any more
    with psycopg.connect(pg_db) as conn:
        names = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'hk%'")}
    assert "hk_default" not in names and any(n.startswith("hkmoved_") for n in names)


def test_a_failed_move_leaves_the_source_unchanged(pg_db: str, hermes_home: Path) -> None:
    _history()
    db = hermes_home / "kanban" / "boards" / "default" / "kanban.db"
    before = dump_board(db)
    # the target already holds a board of that name with tasks: refused, nothing changed on either side
    with Board.open("default", url=pg_db, create=True) as other:
        other.create_task("already there")
    target_before = dump_pg_board(pg_db, "default")
    assert not (db.parent / "postgres.url").exists()  # Board.open(url=...) writes no URL file
    r = run_hermes("kanban", "boards", "migrate", "default", "--to", pg_db, "--json")
    assert r.code == 3 and "already holds a board" in json.loads(r.out)["error"]["message"], r
    assert len(r.err.splitlines()) == 1 and r.err.startswith("error: ")
    assert dump_board(db) == before and dump_pg_board(pg_db, "default") == target_before
    assert not (db.parent / "postgres.url").exists()
    # an unreachable server: exit 4, nothing changed
    from hermes_cli.kanban.store.pg.server import free_port

    r = run_hermes("kanban", "boards", "migrate", "default", "--to", f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                   env={"HERMES_KANBAN_PG_CONNECT_TIMEOUT": "1"})
    assert r.code == 4 and len(r.err.splitlines()) == 1, r
    assert dump_board(db) == before and not (db.parent / "postgres.url").exists()
    # refused while another process has the board open
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from hermes_cli.kanban import Board; "
                               "b = Board.open(); print('open', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        fresh = pg_db.rsplit("/", 1)[0] + "/postgres"
        r = run_hermes("kanban", "boards", "migrate", "default", "--to", fresh)
        assert r.code == 3 and "is open in 1 process" in r.err, r
    finally:
        holder.communicate("")
    assert dump_board(db) == before


def test_moving_back_is_refused_while_a_host_is_connected(pg_db: str) -> None:
    assert run_hermes("kanban", "boards", "create", "team", "--url", pg_db).code == 0
    assert run_hermes("kanban", "--board", "team", "create", "x").code == 0
    before = dump_pg_board(pg_db, "team")
    with Board.open("team"):
        r = run_hermes("kanban", "boards", "migrate", "team", "--to", "sqlite", "--json")
        assert r.code == 3 and "other connection(s)" in json.loads(r.out)["error"]["message"], r
    assert dump_pg_board(pg_db, "team") == before
    assert run_hermes("kanban", "--board", "team", "list", "--json").json()[0]["title"] == "x"


def test_progress_goes_to_stderr_and_the_json_to_stdout(pg_db: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from hermes_cli.kanban.durability import migrate

    from ..cli.conftest import invoke

    with Board.open() as b:
        for i in range(3):
            b.create_task(f"t{i}")
    monkeypatch.setattr(migrate, "PROGRESS_AFTER_S", 0.0)  # as if the move were long
    r = invoke(["kanban", "boards", "migrate", "default", "--to", pg_db, "--json"])
    assert r.code == 0, r
    assert json.loads(r.out)["rows"]["tasks"] == 3
    assert "moving tasks: 3/3" in r.err.splitlines()
    # with HERMES_KANBAN_URL set every board is in PostgreSQL already: moving is refused, one line
    monkeypatch.setenv("HERMES_KANBAN_URL", pg_db)
    r = invoke(["kanban", "boards", "migrate", "default", "--to", "sqlite"])
    assert r.code == 1 and r.error_line.startswith("error: HERMES_KANBAN_URL puts every board of this host")
