"""`hermes kanban tui`: the live board.

The app is a shell: its first screen is the board (`screens/board.py`: columns, detail pane, status line and the
board's keys), which runs every store call in a thread worker of its `BoardLoader` (`loader.py`) and reads the
doorbell in the `DoorbellWatcher`'s (`watcher.py`); the event loop never touches SQLite (CONVENTIONS 10). Results
come up as messages; store failures bubble on to the app, which shows the error screen or an error toast.

The TUI keeps its place in a subscription (`tui-<board>` by default): on start it summarises what completed,
blocked, gave up, crashed or timed out while it was away, and it acknowledges events once it has handled them.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from hermes_cli.kanban.core.errors import BoardBusy, HermesError
from hermes_cli.kanban.core.models import Task
from hermes_cli.kanban.live.readers import EventReader
from hermes_cli.kanban.views import snapshot as view

from .format import clean
from .hub import HubRef
from .loader import BoardLoader
from .screens.board import BoardScreen
from .screens.dialogs import HelpScreen
from .screens.error import BoardErrorScreen, ErrorChoice
from .screens.hub import HubScreen
from .session import BoardRef, subscription_for
from .widgets.column import TaskColumn

__all__ = ["BoardRef", "KanbanApp", "subscription_for"]


class KanbanApp(App[None]):
    """The live board: one column per status, a detail pane, actions, toasts and a status line."""

    #: absolute, so subclasses defined elsewhere (benchmarks, tests) find it too
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "hermes kanban"
    # tab and shift+tab are priority keys of the app (every screen's fields), for the reason given at
    # BoardScreen.BINDINGS: text typed right after a tab must land in the field the tab moved to.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("tab", "focus_next", "Next field", show=False, priority=True),
        Binding("shift+tab", "focus_previous", "Previous field", show=False, priority=True),
    ]

    def __init__(self, board: str | None = None, db_path: str | None = None, subscription: str | None = None,
                 hub: str | None = None) -> None:
        """The local board `board` (or the pinned file `db_path`); with `hub` (a hub URL), board `board` of that hub
        (an id, a slug or HOST:SLUG; None: every board on it), read-only (screens/hub.py)."""
        super().__init__()
        self.board = (HubScreen(HubRef(board, url=hub)) if hub is not None
                      else BoardScreen(BoardRef(board, db_path), subscription))
        self._error_screen: BoardErrorScreen | None = None

    def get_default_screen(self) -> Screen[None]:
        return self.board

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- errors ------------------------------------------------------------------------------------------------------
    @on(BoardLoader.StoreFailed)
    def _store_failed(self, msg: BoardLoader.StoreFailed) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if msg.board_gen != self.board.board_gen:
            return
        if msg.error.exit_code == 4 and not isinstance(msg.error, BoardBusy):
            self.show_error(msg.error)
        else:
            self.notify(clean(msg.error.message), title=f"{msg.what} failed", severity="error", markup=False,
                        timeout=10)

    @on(BoardLoader.BoardFailed)
    def _board_failed(self, msg: BoardLoader.BoardFailed) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if msg.board_gen == self.board.board_gen:
            self.show_error(msg.error)

    @on(BoardLoader.BoardOpened)
    def _board_opened(self, msg: BoardLoader.BoardOpened) -> None:
        if self.is_running and msg.board_gen == self.board.board_gen:
            self.dismiss_error()

    def show_error(self, error: HermesError) -> None:
        self.board.board_ready = False
        self.board.stop_watching()
        if self._error_screen is not None:
            return
        screen = BoardErrorScreen(self.board.ref.label, error)
        self._error_screen = screen

        def chosen(choice: ErrorChoice | None) -> None:
            self._error_screen = None
            if choice == "dismissed":
                return
            if choice == "quit":
                self.exit()
            elif choice == "switch":
                self.board.action_switch_board()
            else:
                self.board.open_board()

        self.push_screen(screen, chosen)

    def dismiss_error(self) -> None:
        if self._error_screen is not None and self.screen is self._error_screen:
            self._error_screen.dismiss("dismissed")

    # -- the board screen's state, read through the app by scripts, tests and bench/tui_bench.py -------------------
    def column(self, status: str) -> TaskColumn:
        return self.board.column(status)

    def visible_columns(self) -> list[TaskColumn]:
        return self.board.columns.shown()

    def apply_filter(self, text: str) -> None:
        self.board.apply_filter(text)

    @property
    def handled_upto(self) -> int:
        return self.board.watcher.handled_upto

    @property
    def ref(self) -> BoardRef:
        return self.board.ref

    @property
    def flt(self) -> view.Filter:
        return self.board.flt

    @property
    def selected(self) -> Task | None:
        return self.board.selected

    @property
    def board_ready(self) -> bool:
        return self.board.board_ready

    @property
    def view_gen(self) -> int:
        return self.board.view_gen

    @property
    def _refresh_running(self) -> bool:
        return self.board.loader.refresh_running

    @property
    def _watch_reader(self) -> EventReader | None:
        return self.board.watcher.reader

    @property
    def _status_polls(self) -> int:
        return self.board.status_polls

    @_status_polls.setter
    def _status_polls(self, polls: int) -> None:
        self.board.status_polls = polls

    def poll_status(self) -> None:
        self.board.poll_status()

    def stop_watching(self) -> None:
        self.board.stop_watching()

    def action_reload(self) -> None:
        self.board.open_board()
