"""The test suite's own database recycling (tests/pgserver.py): a recycled database is as new, under a new name, and
one still in use is never recycled. If this breaks, PostgreSQL tests could see each other's boards."""

from __future__ import annotations

import psycopg
import pytest

from hermes_cli.kanban import Board

from .. import pgserver

SYSTEM = {"pg_catalog", "information_schema", "public", "pg_toast"}


def _contents(url: str) -> tuple[list[str], list[str], int]:
    with psycopg.connect(url, autocommit=True) as conn:
        schemas = sorted(r[0] for r in conn.execute("SELECT nspname FROM pg_namespace") if r[0] not in SYSTEM
                         and not r[0].startswith(("pg_temp_", "pg_toast_temp_")))
        extensions = sorted(r[0] for r in conn.execute("SELECT extname FROM pg_extension"))
        in_public = conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                                 ).fetchone()
    assert in_public is not None
    return schemas, extensions, int(in_public[0])


def test_a_recycled_database_is_empty_and_its_old_url_is_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    url = pgserver.fresh_database()
    monkeypatch.setenv("HERMES_KANBAN_URL", url)
    with Board.open() as b:
        b.create_task("left behind")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA other")
        conn.execute("CREATE TABLE other.t(x int)")
        conn.execute("CREATE EXTENSION amcheck")
    assert _contents(url) == (["hk_default", "other"], ["amcheck", "plpgsql"], 0)
    reused = pgserver.counts["reused"]
    pgserver.recycle()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(url).close()
    again = pgserver.fresh_database()
    assert pgserver.counts["reused"] == reused + 1
    assert again != url
    assert _contents(again) == ([], ["plpgsql"], 0)


def test_a_database_with_an_open_connection_is_left_alone() -> None:
    url = pgserver.fresh_database()
    left = pgserver.counts["left"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept(x int)")
        pgserver.recycle()
        assert pgserver.counts["left"] == left + 1
        assert conn.execute("SELECT current_database()").fetchone() == (url.rsplit("/", 1)[1],)
    with psycopg.connect(url, autocommit=True) as conn:  # still there, under its name, with its table
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)


def test_a_database_with_something_in_public_is_not_reused() -> None:
    url = pgserver.fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.stray(x int)")
    left = pgserver.counts["left"]
    pgserver.recycle()
    assert pgserver.counts["left"] == left + 1
    fresh = pgserver.fresh_database()
    assert _contents(fresh)[2] == 0
