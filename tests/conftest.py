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


ENGINES = ("sqlite", "postgres")


def pytest_addoption(parser):
    parser.addoption("--engines", default=",".join(ENGINES), metavar="sqlite,postgres",
                     help="the engines `engine` tests run on (default both; .ci/run's lower-bounds pass: sqlite, as "
                          "the full run already covers both). Tests that do not use `engine` always run.")


def pytest_configure(config):
    wanted = [e.strip() for e in config.getoption("--engines").split(",") if e.strip()]
    if not wanted or set(wanted) - set(ENGINES):
        raise pytest.UsageError(f"--engines: a comma-separated subset of {','.join(ENGINES)}, not {wanted}")


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


def pytest_collection_modifyitems(config, items):
    """--engines: an `engine` test on an engine not asked for is deselected (reported as such, never skipped)."""
    wanted = {e.strip() for e in config.getoption("--engines").split(",")}
    if wanted >= set(ENGINES):
        return
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("engine") if callspec is not None else None
        (dropped if engine is not None and engine not in wanted else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def engine(request) -> str:
    """The engine of the boards this test opens: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        request.getfixturevalue("pg_url")
    return str(request.param)
