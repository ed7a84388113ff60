"""PostgreSQL-only tests of the product around the store (boards, doctor, backup, moves, the spool): real servers."""

from __future__ import annotations

import pytest

from .. import pgserver
from ..cli.conftest import Cli, invoke


@pytest.fixture
def pg_db() -> str:
    """The URL of a fresh empty database on the session's test server (HERMES_KANBAN_URL left unset: boards name it
    with `boards create --url`)."""
    return pgserver.fresh_database()


@pytest.fixture
def cli() -> Cli:
    return lambda *args, stdin=None: invoke(["kanban", *args], stdin=stdin)
