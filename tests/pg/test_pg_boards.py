"""`boards create SLUG --url`, list/show/rm of a PostgreSQL board, and HERMES_KANBAN_URL."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import psycopg
import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.store.pg.database import schema_name

from ..cli.conftest import Cli


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'hk%'")}


def test_create_with_url_makes_the_schema_and_writes_the_url_file(cli: Cli, pg_db: str, hermes_home: Path) -> None:
    url = pg_db.replace("postgres@", "postgres:s3cret@")  # trust auth ignores the password; output must not show it
    r = cli("boards", "create", "team", "--url", url, "--json")
    assert r.code == 0, r
    data = r.json()
    assert data == {"slug": "team", "engine": "postgres", "db": pg_db, "url": pg_db, "created": True}
    assert "s3cret" not in r.out + r.err
    f = hermes_home / "kanban" / "boards" / "team" / "postgres.url"
    assert f.read_text().strip() == url and stat.S_IMODE(f.stat().st_mode) == 0o600
    assert not (f.parent / "kanban.db").exists()
    assert schema_name("team") in _schemas(pg_db)
    # again: attaches, creates nothing
    r = cli("boards", "create", "team", "--url", url, "--json")
    assert (r.code, r.json()["created"]) == (0, False)
    # every command now works on it
    r = cli("--board", "team", "create", "on postgres", "--json")
    assert r.code == 0, r
    with Board.open("team") as b:
        assert b.db.engine == "postgres" and [t.title for t in b.list_tasks()] == ["on postgres"]
    listed = cli("boards", "list", "--json").json()
    assert listed == [{"slug": "team", "engine": "postgres", "db": pg_db, "url": pg_db, "name": None,
                       "description": None, "current": False}]
    assert cli("boards", "list").out == "team\n"  # the human list is the same on both engines
    assert cli("boards", "switch", "team").code == 0
    shown = cli("boards", "show", "--json").json()
    assert (shown["engine"], shown["url"], shown["slug"]) == ("postgres", pg_db, "team")
    assert "s3cret" not in json.dumps([listed, shown])


def test_create_with_url_refuses_a_sqlite_board_and_another_url(cli: Cli, pg_db: str) -> None:
    assert cli("boards", "create", "local").code == 0
    r = cli("boards", "create", "local", "--url", pg_db)
    assert r.code == 3 and r.error_line == (
        f"error: board local already exists in SQLite at {Board.open('local').paths.db}; move it with: hermes kanban "
        "boards migrate local --to URL")
    assert _schemas(pg_db) == set()
    assert cli("boards", "create", "team", "--url", pg_db).code == 0
    other = pg_db.rsplit("/", 1)[0] + "/elsewhere"
    r = cli("boards", "create", "team", "--url", other)
    assert r.code == 3 and "already lives at" in r.error_line
    r = cli("boards", "create", "team", "--url", "mysql://x")
    assert r.code == 1 and r.error_line.startswith("error: invalid board URL")


def test_an_unreachable_server_creates_nothing(cli: Cli, hermes_home: Path) -> None:
    from hermes_cli.kanban.store.pg.server import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nope"
    r = cli("boards", "create", "team", "--url", url, "--json")
    assert r.code == 4 and r.json()["error"]["code"] and "cannot be reached" in r.error_line
    assert not (hermes_home / "kanban" / "boards" / "team" / "postgres.url").exists()
    assert cli("boards", "list", "--json").json() == []


def test_slugs_that_differ_only_by_dash_or_underscore_are_two_boards(cli: Cli, pg_db: str) -> None:
    long_a, long_b = "x" * 63 + "a", "x" * 63 + "b"
    for slug in ("a-b", "a_b", long_a, long_b):
        assert cli("boards", "create", slug, "--url", pg_db).code == 0
        assert cli("--board", slug, "create", f"on {slug}").code == 0
    for slug in ("a-b", "a_b", long_a, long_b):
        with Board.open(slug) as b:
            assert [t.title for t in b.list_tasks()] == [f"on {slug}"]
    assert len(_schemas(pg_db)) == 4 and all(len(s) <= 63 for s in _schemas(pg_db))


def test_rm_keeps_the_schema_unless_drop_schema(cli: Cli, pg_db: str) -> None:
    assert cli("boards", "create", "team", "--url", pg_db).code == 0
    assert cli("--board", "team", "create", "kept").code == 0
    r = cli("boards", "rm", "team", "--json")
    assert r.code == 0, r
    assert r.json() | {"archived_to": None} == {"slug": "team", "deleted": False, "archived_to": None,
                                                 "engine": "postgres", "dropped_schema": None,
                                                 "kept_schema": "hk_team", "url": pg_db}
    assert "hk_team" in _schemas(pg_db) and cli("boards", "list", "--json").json() == []
    # attach again: the data is there
    r = cli("boards", "create", "team", "--url", pg_db, "--json")
    assert r.json()["created"] is False
    assert [t["title"] for t in cli("--board", "team", "list", "--json").json()] == ["kept"]
    # refused while a connection to the board is open
    with Board.open("team") as b:
        r = cli("boards", "rm", "team", "--drop-schema")
        assert r.code == 3 and "other connection(s)" in r.error_line
        assert b.list_tasks()
    r = cli("boards", "rm", "team", "--drop-schema", "--json")
    assert r.code == 0 and r.json()["dropped_schema"] == "hk_team"
    assert _schemas(pg_db) == set()
    r = cli("boards", "rm", "local", "--drop-schema")
    assert r.code == 1


def test_rm_drop_schema_of_a_sqlite_board_is_refused(cli: Cli) -> None:
    assert cli("boards", "create", "local").code == 0
    r = cli("boards", "rm", "local", "--drop-schema")
    assert r.code == 1 and "SQLite board" in r.error_line
    assert cli("boards", "list", "--json").json()[0]["slug"] == "local"


def test_hermes_kanban_url_puts_every_board_in_postgres(cli: Cli, pg_url: str, hermes_home: Path) -> None:
    assert cli("create", "on the default board").code == 0
    assert cli("boards", "create", "research").code == 0
    assert not list((hermes_home / "kanban" / "boards").glob("*/kanban.db"))
    listed = cli("boards", "list", "--json").json()
    assert [(b["slug"], b["engine"], b["url"]) for b in listed] == [("default", "postgres", pg_url),
                                                                     ("research", "postgres", pg_url)]
    # another host (another HERMES_HOME) sees the fleet's boards from the server
    os.environ["HERMES_HOME"] = str(hermes_home.parent / "other-host")
    assert [b["slug"] for b in cli("boards", "list", "--json").json()] == ["default", "research"]
    r = cli("boards", "create", "research", "--url", pg_url.rsplit("/", 1)[0] + "/other")
    assert r.code == 1 and "HERMES_KANBAN_URL names another database" in r.error_line


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_init_says_where_the_board_is(cli: Cli, pg_url: str, flag: list[str]) -> None:
    r = cli("init", *flag)
    assert r.code == 0
    if flag:
        assert r.json() == {"board": "default", "engine": "postgres", "db": pg_url, "url": pg_url, "tasks": 0}
    else:
        assert r.out == f"board default ready at {pg_url}\n"
