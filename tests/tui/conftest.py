"""TUI test helpers: a seeded board, waiting for the app (bounded, never a timing assertion), plain text of what a
widget shows."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from hermes_cli.kanban import Board
from tui.app import KanbanApp

SIZE = (160, 48)


@pytest.fixture
def board(hermes_home: Path, engine: str) -> Iterator[Board]:
    """The board the app opens, on each engine in turn (the TUI reads both through the same Board API)."""
    b = Board.open()
    yield b
    b.close()


@pytest.fixture
def seeded(board: Board) -> dict[str, str]:
    """A task in every status, with known titles; returns status -> task id (two ready ones: ready, ready2)."""
    ids: dict[str, str] = {}
    ids["ready"] = board.create_task("write the quarterly report", priority=9, tenant="ops")[0].id
    ids["ready2"] = board.create_task("deploy the new parser", priority=5)[0].id
    ids["ready3"] = board.create_task("backfill invoices", priority=1, tenant="billing")[0].id
    ids["running"] = board.create_task("crawl the docs site", priority=3)[0].id
    claim = board.claim(ids["running"], worker="w1")
    assert claim is not None
    ids["review"] = board.create_task("refactor the cache", review=True)[0].id
    rc = board.claim(ids["review"], worker="w2")
    assert rc is not None
    board.complete(ids["review"], rc.run_id, summary="please look")
    ids["blocked"] = board.create_task("rotate the api keys")[0].id
    board.block(ids["blocked"], reason="needs credentials")
    ids["done"] = board.create_task("index the archive", body="Index every PDF in /srv/archive.")[0].id
    dc = board.claim(ids["done"], worker="w3")
    assert dc is not None
    board.complete(ids["done"], dc.run_id, summary="indexed 1,204 files")
    ids["todo"] = board.create_task("publish the index", parents=[ids["running"]])[0].id
    ids["archived"] = board.create_task("old idea")[0].id
    board.archive(ids["archived"])
    return ids


async def until(pilot: Any, check: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    """Let the app run until `check()` is true; fail (not hang) after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await pilot.pause(0.02)


async def opened(app: KanbanApp, pilot: Any) -> None:
    await until(pilot, lambda: app.board_ready and app._watch_reader is not None, what="the board to open")
    await pilot.pause()


def plain(renderable: Any, width: int = 120) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


class RecordingApp(KanbanApp):
    """The real app; every notification it raises is also kept in `toasts` (title, message, severity)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.toasts: list[tuple[str, str, str]] = []

    def notify(self, message: str, *, title: str = "", severity: Any = "information", **kwargs: Any) -> None:
        self.toasts.append((title, message, severity))
        super().notify(message, title=title, severity=severity, **kwargs)
