"""The hub view: the board screen over the hub's latest task snapshots (`hermes kanban tui --hub URL`), read-only and
live. Columns, counts, filter and detail pane are the board screen's own, fed by the `HubLoader` and the
`HubWatcher` (tui/hub.py) instead of a Board and its doorbell; every key that would change a task says it cannot."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on

from ..hub import ALL_BOARDS, READ_ONLY, HubLoader, HubRef, HubWatcher
from ..widgets.detail import DetailPane
from ..widgets.hub_status import HubStatusLine
from ..widgets.status import StatusLine
from .board import BoardScreen


class HubScreen(BoardScreen):
    """Boards `ref.slug` (None: every board) of the hub at `ref.url`, read-only."""

    STATUS_LINE: ClassVar[type[StatusLine]] = HubStatusLine

    def __init__(self, ref: HubRef) -> None:
        super().__init__(ref)
        self.hub_ref = ref
        self.loader = HubLoader(ref.url)
        self.watcher = HubWatcher(self.loader)

    def open_board(self) -> None:
        super().open_board()
        self.query_one(HubStatusLine).hub = self.hub_ref.hub

    # -- what a hub view refuses -------------------------------------------------------------------------------------
    def refuse(self) -> None:
        self.notify(READ_ONLY, severity="warning", markup=False)

    def action_create(self) -> None:
        self.refuse()

    def action_act_on(self, verb: str) -> None:
        self.refuse()

    def act(self, verb: str, task_id: str | None, **kwargs: Any) -> None:
        self.refuse()  # never reached from a key (they are refused above); kept so no path can reach the loader

    # -- the status line: the hub's state comes from the watcher's polls ---------------------------------------------
    def poll_status(self) -> None:
        """No dispatcher lease or doctor to read on a hub (HubWatcher.HubMoved carries what the line shows)."""

    @on(HubWatcher.HubMoved)
    def _hub_moved(self, msg: HubWatcher.HubMoved) -> None:
        if not self.app.is_running or msg.board_gen != self.board_gen:
            return  # shutting down (widgets are being removed), or about a selection no longer shown
        line = self.query_one(HubStatusLine)
        line.hub = msg.hub
        line.boards = tuple(msg.boards)
        line.last_at = msg.last_at
        # A board's ack moved, so its snapshots did: refresh (coalesced by the loader with the refresh BoardChanged
        # asks for) and reload an open detail pane, whether or not the watcher read an event of its task (it reads
        # at most its per-poll share).
        self.request_refresh()
        pane = self.query_one(DetailPane)
        if pane.is_open and pane.task_id is not None:
            self.loader.load_detail(self.ref, pane.task_id, self.board_gen)

    # -- switching between the hub's boards --------------------------------------------------------------------------
    def switch_board(self, slug: str) -> None:
        board = None if slug == ALL_BOARDS else slug
        if board != self.hub_ref.slug or not self.board_ready:
            self.hub_ref = HubRef(board, url=self.hub_ref.url)
            self.ref = self.hub_ref
            self.query_one(DetailPane).close()
            self.open_board()
