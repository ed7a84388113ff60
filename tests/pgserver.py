"""The PostgreSQL server the test suite runs against: a throwaway one started once per session (store/pg/server.py),
or an external one named by HERMES_KANBAN_TEST_PG_URL. PostgreSQL tests never skip: with no server binaries and no
URL they fail, naming what to install.

Every test that asks gets a database of its own, under a name no earlier test had. CREATE DATABASE copies template0
(~7.5 MB written, 0.1-0.3 s on a loaded machine, ~550 tests ask), so after a test its databases are recycled when that
is provably the same as a fresh one (`recycle`, called by tests/conftest.py once the test's teardown is over): renamed
(which PostgreSQL refuses while anything is connected, and which kills the old URL for any straggler), then emptied
back to template0's contents and checked, else simply left alone as before.
"""

from __future__ import annotations

import itertools
import os
import threading

import psycopg

from hermes_cli.kanban.store.pg.server import ThrowawayServer

_lock = threading.Lock()
_server: ThrowawayServer | None = None
_counter = itertools.count(1)
#: databases handed out since the last `recycle()` (the current test's)
_handed_out: list[str] = []
#: recycled databases: empty, no connection, their old names dead; the next `fresh_database()` takes one
_pool: list[str] = []
#: how many databases were created, reused from the pool, and left alone after a test (the session's summary)
counts = {"created": 0, "reused": 0, "left": 0}
#: schemas every database has (anything else is the test's and is dropped)
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "public")


def admin_url() -> str:
    """The URL of a database we may CREATE DATABASE from (starting the throwaway server on first use)."""
    global _server
    external = os.environ.get("HERMES_KANBAN_TEST_PG_URL")
    if external:
        return external
    with _lock:
        if _server is None:
            _server = ThrowawayServer(fsync=False).start()
        return _server.url


def server() -> ThrowawayServer:
    admin_url()
    assert _server is not None, "HERMES_KANBAN_TEST_PG_URL names an external server: no throwaway server to control"
    return _server


def _url(base: str, name: str) -> str:
    return base.rsplit("/", 1)[0] + "/" + name


def fresh_database(*, keep: bool = False) -> str:
    """A new empty database on the test server (a name never handed out before); returns its URL. It is recycled
    after the current test unless `keep` (a fixture that outlives one test must pass keep=True)."""
    base = admin_url()
    with _lock:
        name = _pool.pop() if _pool else None
    if name is None:
        name = f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        counts["created"] += 1
    else:
        counts["reused"] += 1
    if not keep:
        with _lock:
            _handed_out.append(name)
    return _url(base, name)


def recycle() -> None:
    """After a test (all its fixtures torn down): put each database it was given back into the pool when that is
    safe. Safe means: nothing is connected (ALTER DATABASE ... RENAME refuses otherwise, and after it nothing can
    reach the database under the name the test knew), and once the test's schemas and extensions are dropped the
    database holds exactly what template0 gives (checked, catalog by catalog). Anything else: left as it is."""
    with _lock:
        names = list(_handed_out)
        _handed_out.clear()
    if not names:
        return
    base = admin_url()
    with psycopg.connect(base, autocommit=True) as admin:
        for name in names:
            new = f"t{os.getpid()}_{next(_counter)}"
            try:
                admin.execute(f'ALTER DATABASE "{name}" RENAME TO "{new}"')
            except psycopg.errors.ObjectInUse:
                counts["left"] += 1
                continue  # a connection is still open (a straggler of the test): leave the database alone
            except psycopg.Error as exc:  # e.g. the test dropped or renamed it itself: nothing to recycle
                print(f"pgserver: database {name} not recycled: {exc}")
                counts["left"] += 1
                continue
            try:
                clean = _empty(_url(base, new), admin)
            except psycopg.Error as exc:
                # e.g. the test stopped the server under it: the database is left alone, like one still in use
                print(f"pgserver: database {new} not recycled: {exc}")
                counts["left"] += 1
                continue
            if clean:
                with _lock:
                    _pool.append(new)
            else:
                counts["left"] += 1


def _empty(url: str, admin: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Drop what the test made in the database at `url`; True if it is then indistinguishable from a new one."""
    with psycopg.connect(url, autocommit=True) as conn:
        schemas = [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname <> ALL(%s) AND nspname NOT LIKE 'pg\\_toast%%' "
            "AND nspname NOT LIKE 'pg\\_temp\\_%%'", (list(_SYSTEM_SCHEMAS),))]
        extensions = [r[0] for r in conn.execute("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'")]
        with conn.transaction():
            for ext in extensions:
                conn.execute(f'DROP EXTENSION "{ext}" CASCADE')
            for schema in schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        leftovers = conn.execute(
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname <> ALL(%s) AND nspname NOT LIKE 'pg\\_toast%%'"
            "        AND nspname NOT LIKE 'pg\\_temp\\_%%')"
            " + (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace)"
            " + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace)"
            " + (SELECT count(*) FROM pg_type WHERE typnamespace = 'public'::regnamespace)"
            " + (SELECT count(*) FROM pg_operator WHERE oprnamespace = 'public'::regnamespace)"
            " + (SELECT count(*) FROM pg_collation WHERE collnamespace = 'public'::regnamespace)"
            " + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')"
            " + (SELECT count(*) FROM pg_event_trigger) + (SELECT count(*) FROM pg_publication)"
            " + (SELECT count(*) FROM pg_largeobject_metadata)"
            " + (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database())"
            " + (SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
            "    WHERE d.datname = current_database())", (list(_SYSTEM_SCHEMAS),)).fetchone()
        public = conn.execute("SELECT nspowner, nspacl::text FROM pg_namespace WHERE nspname = 'public'").fetchone()
        database = conn.execute("SELECT datallowconn, datconnlimit, datistemplate, datacl::text FROM pg_database "
                                "WHERE datname = current_database()").fetchone()
    # the admin database was made by initdb from the same template, and no test changes its public schema
    fresh_public = admin.execute("SELECT nspowner, nspacl::text FROM pg_namespace WHERE nspname = 'public'").fetchone()
    return leftovers == (0,) and public == fresh_public and database == (True, -1, False, None)


def stop() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
