"""Fixtures shared by every test: no test ever touches a real home."""

from __future__ import annotations

import pytest

from . import pgserver


@pytest.fixture(autouse=True)
def hermes_home(tmp_path, monkeypatch):
    """Point HERMES_HOME at a fresh temp dir and clear board-selection variables a worker shell might carry."""
    home = tmp_path / "hermes-home"
    monkeypatch.setenv("HERMES_HOME", str(home))
    for var in ("HERMES_KANBAN_DB", "HERMES_KANBAN_BOARD", "HERMES_KANBAN_TASK", "HERMES_KANBAN_RUN_ID",
                "HERMES_KANBAN_WORKSPACE", "HERMES_KANBAN_SYNCHRONOUS", "HERMES_PROFILE", "HERMES_KANBAN_URL",
                "HERMES_KANBAN_HUB_URL", "HERMES_KANBAN_SYNC"):
        monkeypatch.delenv(var, raising=False)
    return home


def pytest_sessionfinish(session, exitstatus):
    pgserver.stop()


def pytest_terminal_summary(terminalreporter):
    if any(pgserver.counts.values()):
        terminalreporter.write_line("test PostgreSQL databases: " + ", ".join(
            f"{n} {what}" for what, n in pgserver.counts.items()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Once every fixture of the test is torn down (its processes ended, its boards closed), its PostgreSQL
    databases go back to the pool if nothing can tell them from new ones (tests/pgserver.py recycle)."""
    try:
        return (yield)
    finally:
        pgserver.recycle()


@pytest.fixture
def pg_url(monkeypatch) -> str:
    """Every board of this test lives in a fresh PostgreSQL database (HERMES_KANBAN_URL)."""
    url = pgserver.fresh_database()
    monkeypatch.setenv("HERMES_KANBAN_URL", url)
    return url


def pytest_generate_tests(metafunc):
    """A test that uses `engine` (or a fixture that does) runs on both engines, unless marked `sqlite_only` (a test
    of SQLite itself: pragmas, its lock, APSW's errors)."""
    if "engine" in metafunc.fixturenames:
        engines = ["sqlite", "postgres"]
        if metafunc.definition.get_closest_marker("sqlite_only"):
            engines = ["sqlite"]
        elif metafunc.definition.get_closest_marker("postgres_only"):
            engines = ["postgres"]
        metafunc.parametrize("engine", engines, indirect=True)


@pytest.fixture
def engine(request) -> str:
    """The engine of the boards this test opens: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        request.getfixturevalue("pg_url")
    return str(request.param)
