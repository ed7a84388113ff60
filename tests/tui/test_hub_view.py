"""The TUI's hub view (`hermes kanban tui --hub URL`): a local board synced to a real hub (a fresh PostgreSQL database,
a real `hermes kanban sync --once`), shown read-only and live by the real app under Pilot."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.core.hubconf import redact
from tui.hub import READ_ONLY, HubWatcher
from tui.screens.dialogs import BoardSwitcher
from tui.screens.error import BoardErrorScreen
from tui.screens.hub import HubScreen
from tui.widgets.column import TaskColumn
from tui.widgets.detail import DetailPane
from tui.widgets.hub_status import HubStatusLine

from .. import pgserver
from ..hub.conftest import hermes, hub_rows
from .conftest import SIZE, RecordingApp, plain, until


@pytest.fixture
def hub_url() -> str:
    """A fresh hub database, named with a password (the test server trusts local connections, so it is ignored by
    the server, but it must never be shown)."""
    url = pgserver.fresh_database()
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:s3cret-pw@{host}"


@pytest.fixture
def local(hermes_home: Path) -> Iterator[Board]:
    """The host's local (SQLite) board, seeded with tasks in several statuses."""
    b = Board.open()
    b.create_task("write the quarterly report", priority=9, tenant="ops")
    b.create_task("deploy the new parser", priority=5)
    running = b.create_task("crawl the docs site", priority=3)[0]
    assert b.claim(running.id, worker="w1") is not None
    blocked = b.create_task("rotate the api keys")[0]
    b.block(blocked.id, reason="needs credentials")
    done = b.create_task("index the archive")[0]
    claim = b.claim(done.id, worker="w3")
    assert claim is not None
    b.complete(done.id, claim.run_id, summary="indexed 1,204 files")
    yield b
    b.close()


def sync(url: str) -> None:
    proc = hermes("sync", "--once", "--hub", url, "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"status": "synced"' in proc.stdout, proc.stdout


def local_counts(b: Board) -> dict[str, int]:
    rows = b.db.rows("SELECT status, count(*) AS n FROM tasks GROUP BY status")
    found = {str(r["status"]): int(r["n"]) for r in rows}
    return {str(s): found.get(str(s), 0) for s in TaskStatus}


def counts(app: RecordingApp) -> dict[str, int]:
    return {c.status: c.count for c in app.query(TaskColumn)}


def titles(app: RecordingApp, status: str) -> list[str]:
    col = app.column(status)
    return [col.task_at(i).title for i in range(col.count)]


def status_text(app: RecordingApp) -> str:
    return plain(app.query_one(HubStatusLine).render(), width=300)


def hub_state(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    return (hub_rows(url, "SELECT * FROM hermes_hub.tasks ORDER BY board_id, id"),
            hub_rows(url, "SELECT * FROM hermes_hub.events ORDER BY board_id, id"),
            hub_rows(url, "SELECT * FROM hermes_hub.acks ORDER BY board_id"))


async def hub_opened(app: RecordingApp, pilot: Any) -> None:
    watcher = app.board.watcher
    assert isinstance(watcher, HubWatcher)
    await until(pilot, lambda: app.board_ready and watcher.watching, what="the hub view to open")
    await pilot.pause()


def host_label(b: Board) -> str:
    import socket

    return f"{socket.gethostname()}:{b.slug}"


async def test_hub_view_shows_the_synced_tasks_with_counts_detail_and_status(local: Board, hub_url: str) -> None:
    sync(hub_url)
    app = RecordingApp(hub=hub_url)
    async with app.run_test(size=SIZE) as pilot:
        await hub_opened(app, pilot)
        assert isinstance(app.board, HubScreen)
        want = local_counts(local)
        assert counts(app) == want and want["ready"] == 2 and want["done"] == 1
        assert titles(app, "ready") == ["write the quarterly report", "deploy the new parser"]
        assert titles(app, "running") == ["crawl the docs site"]
        assert app.column("ready").border_subtitle == "2"
        # the status line: a read-only hub view, which hub (no password), which boards, the newest event's time
        await until(pilot, lambda: host_label(local) in status_text(app), what="the hub's boards in the status line")
        line = status_text(app)
        assert "read-only hub view" in line
        assert redact(hub_url) in line and "s3cret-pw" not in line
        last = local.db.value("SELECT max(created_at) FROM events")
        from hermes_cli.kanban.core.models import iso

        assert f"last event: {iso(float(last))}" in line
        assert "5 tasks" in line
        # the detail pane: the task as the hub has it, with its events from the hub
        await pilot.press("l")  # ready -> running
        await until(pilot, lambda: app.selected is not None and app.selected.title == "crawl the docs site",
                    what="the running card selected")
        await pilot.press("enter")
        pane = app.query_one(DetailPane)
        await until(pilot, lambda: pane.task_id == app.selected.id, what="the detail pane")  # type: ignore[union-attr]
        body = plain(pane.query_one("#detail-body", Static).content, width=160)
        assert "crawl the docs site" in body and "running" in body
        assert "created" in body and "claimed" in body  # the task's events, read from the hub
        assert host_label(local) in body  # which board it came from


async def test_a_change_synced_again_appears_in_the_open_view(local: Board, hub_url: str) -> None:
    sync(hub_url)
    app = RecordingApp(hub=hub_url)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await hub_opened(app, pilot)
        assert counts(app)["ready"] == 2 and counts(app)["done"] == 1
        before = status_text(app)
        # another task and a completion on the host's board; nothing reaches the view until the board syncs again
        local.create_task("ship the release notes", priority=7)
        claim = local.claim(local.db.value("SELECT id FROM tasks WHERE title = 'deploy the new parser'"), worker="w9")
        assert claim is not None
        local.complete(claim.task_id, claim.run_id, summary="ok")
        watcher = app.board.watcher
        assert isinstance(watcher, HubWatcher)
        polls = watcher.polls
        await until(pilot, lambda: watcher.polls >= polls + 2, what="two polls of the hub")
        assert counts(app)["done"] == 1  # not synced yet: the view shows the hub, not the board
        await asyncio.to_thread(sync, hub_url)
        await until(pilot, lambda: counts(app) == local_counts(local), what="the synced change in the view")
        assert titles(app, "ready") == ["write the quarterly report", "ship the release notes"]
        assert counts(app)["done"] == 2
        # the completion toasts as on a board, and the status line moves to the newest event
        await until(pilot, lambda: any(t[0].startswith("✔ completed") for t in app.toasts), what="the toast")
        await until(pilot, lambda: status_text(app) != before, what="the status line to move")
        assert f"{sum(n for s, n in local_counts(local).items() if s != 'archived')} tasks" in status_text(app)


async def test_action_keys_are_refused_and_change_nothing(local: Board, hub_url: str) -> None:
    sync(hub_url)
    hub_before = hub_state(hub_url)
    local_before = local_counts(local), local.db.value("SELECT max(id) FROM events")
    app = RecordingApp(hub=hub_url)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await hub_opened(app, pilot)
        assert app.selected is not None and app.selected.status == TaskStatus.READY
        for key in ("c", "b", "u", "a", "x", "m", "n"):
            app.toasts.clear()
            await pilot.press(key)
            await pilot.pause()
            assert app.toasts == [("", READ_ONLY, "warning")], key
            assert app.screen is app.board, f"{key} opened {app.screen!r}"  # no dialog: nothing to confirm
        await pilot.pause(0.3)
    assert hub_state(hub_url) == hub_before
    assert (local_counts(local), local.db.value("SELECT max(id) FROM events")) == local_before


def test_python_m_tui_takes_the_hub_url_from_the_environment_only(hermes_home: Path, hub_url: str) -> None:
    """`hermes kanban tui --hub URL` exec's `python -m tui --hub` with the URL in HERMES_KANBAN_HUB_URL: with none
    configured, `python -m tui --hub` says so (exit 2) instead of opening anything; and `tui --hub` refuses a
    URL that is not PostgreSQL's before exec'ing."""
    env = {k: v for k, v in os.environ.items() if k != "HERMES_KANBAN_HUB_URL"}
    proc = subprocess.run([sys.executable, "-m", "tui", "--hub"], capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no hub configured"), proc.stderr
    bad = hermes("tui", "--hub", "mysql://x@y/z")
    assert bad.returncode == 1 and bad.stderr.startswith("error: invalid hub URL"), bad.stderr  # as sync --hub
    both = hermes("tui", "--hub", hub_url, "--subscription", "mine")
    assert both.returncode == 2 and "--subscription" in both.stderr and "s3cret-pw" not in both.stderr


async def test_board_selects_one_board_of_the_hub_and_an_unknown_one_is_an_error(local: Board, hub_url: str) -> None:
    sync(hub_url)
    other = Board.open("nightly", create=True)
    other.create_task("only on the nightly board")
    other.close()
    proc = hermes("sync", "--once", "--board", "nightly", "--hub", hub_url, "--quiet")
    assert proc.returncode == 0, proc.stderr
    app = RecordingApp(hub=hub_url, board=host_label(local))
    async with app.run_test(size=SIZE) as pilot:
        await hub_opened(app, pilot)
        assert counts(app) == local_counts(local)  # the nightly board's task is not in this view
        await until(pilot, lambda: f"board {host_label(local)}" in status_text(app), what="the board in the line")
    app = RecordingApp(hub=hub_url)
    async with app.run_test(size=SIZE) as pilot:
        await hub_opened(app, pilot)
        assert "only on the nightly board" in titles(app, "ready")  # every board: the fleet in one set of columns
        # `s` lists the hub's boards; picking one shows only it
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, BoardSwitcher), what="the switcher")
        switcher = app.screen
        assert isinstance(switcher, BoardSwitcher)
        assert switcher.slugs == sorted(["all boards", host_label(local), host_label(local).split(":")[0] + ":nightly"])
        switcher.dismiss(host_label(local))
        await until(pilot, lambda: app.board_ready and "only on the nightly board" not in titles(app, "ready"),
                    what="the view switched to one board")
        assert counts(app) == local_counts(local)
    app = RecordingApp(hub=hub_url, board="nowhere:nothing")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, BoardErrorScreen), what="the error screen")
        assert not app.board_ready


async def test_a_dropped_hub_connection_is_retried_and_the_view_stays_live(local: Board, hub_url: str) -> None:
    sync(hub_url)
    app = RecordingApp(hub=hub_url)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await hub_opened(app, pilot)
        # the server drops every connection of the view (as a hub restart or a cut link would)
        dbname = hub_url.rsplit("/", 1)[1]
        hub_rows(hub_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
        await until(pilot, lambda: any("cannot be reached" in t[1] for t in app.toasts), what="the warning toast")
        assert not any("s3cret-pw" in t[1] for t in app.toasts)
        await until(pilot, lambda: any(t[1].endswith(" is back") for t in app.toasts), what="the hub to be back")
        assert app.screen is app.board  # no error screen: the view kept going
        local.create_task("after the drop", priority=8)
        await asyncio.to_thread(sync, hub_url)
        await until(pilot, lambda: "after the drop" in titles(app, "ready"), what="the change after the drop")
