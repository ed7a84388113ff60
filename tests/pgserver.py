"""The PostgreSQL server the test suite runs against: a throwaway one started once per session (store/pg/server.py),
or an external one named by HERMES_KANBAN_TEST_PG_URL. PostgreSQL tests never skip: with no server binaries and no
URL they fail, naming what to install."""

from __future__ import annotations

import itertools
import os
import threading

import psycopg

from hermes_cli.kanban.store.pg.server import ThrowawayServer

_lock = threading.Lock()
_server: ThrowawayServer | None = None
_counter = itertools.count(1)


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


def fresh_database() -> str:
    """A new empty database on the test server; returns its URL."""
    base = admin_url()
    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return base.rsplit("/", 1)[0] + "/" + name


def stop() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
