"""The doorbell watcher: a long-lived thread worker that blocks on the board's FIFO, reads the events after its
cursor and posts `BoardChanged` up to the board screen, which shows toasts and schedules one refresh. It keeps the
TUI's place in its subscription: it acknowledges events up to what the screen says it has handled. Shows nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from textual import work
from textual.message import Message
from textual.widget import Widget
from textual.worker import get_current_worker

from hermes_cli.kanban.core.errors import BoardBusy, NotFound
from hermes_cli.kanban.core.models import Event
from hermes_cli.kanban.live.readers import RECHECK_S, TOAST_KINDS, EventReader
from hermes_cli.kanban.views import snapshot as view

from .loader import BoardLoader
from .session import BoardRef


class DoorbellWatcher(Widget):
    """Watches one board at a time (`start`), until `stop`."""

    DEFAULT_CSS: ClassVar[str] = "DoorbellWatcher { display: none; }"

    @dataclass
    class BoardChanged(Message):
        board_gen: int
        events: list[Event]
        cursor: int
        titles: dict[str, str] = field(default_factory=dict)

    def __init__(self, loader: BoardLoader) -> None:
        super().__init__()
        #: reports the watcher's failures like every other store call's
        self.loader = loader
        #: the reader of the board being watched (None when not watching)
        self.reader: EventReader | None = None
        #: newest event id the screen has handled (toasts shown); the watcher acknowledges up to here
        self.handled_upto = 0

    @work(thread=True, exclusive=True, group="watch", exit_on_error=False)
    def start(self, ref: BoardRef, board_gen: int, subscription: str | None, after: int) -> None:
        worker = get_current_worker()
        with self.loader.reporting("watching the board", board_gen), ref.open() as b, \
                EventReader(b, name="tui", subscription=subscription, after=after, warn=self._warn) as reader:
            self.reader = reader
            try:
                while not worker.is_cancelled:
                    self._acknowledge(reader)
                    events = reader.wait(RECHECK_S)
                    if worker.is_cancelled:
                        break
                    if events:
                        ids = [e.task_id for e in events
                               if e.kind in TOAST_KINDS and e.task_id and "title" not in e.payload]
                        titles = view.titles(b, ids) if ids else {}
                        self.post_message(self.BoardChanged(board_gen, events, reader.cursor, titles))
            finally:
                if self.reader is reader:
                    self.reader = None
                self._acknowledge(reader)

    def _warn(self, message: str) -> None:
        """A PostgreSQL board's listener fell back to polling (runs in its thread): a toast, never stderr."""
        self.app.call_from_thread(self.notify, message, severity="warning", markup=False)

    def _acknowledge(self, reader: EventReader) -> None:
        """Persist the subscription cursor up to what the screen has handled (runs in the watcher thread)."""
        upto = min(self.handled_upto, reader.cursor)
        if upto <= reader.acked or reader.subscription is None:
            return
        try:
            reader.ack(upto)
        except BoardBusy:
            return  # writers hold the board right now; the next wake acknowledges (delivery is at-least-once)
        except NotFound:
            reader.subscription = None  # someone ran notify-unsubscribe: keep watching, stop remembering
            self.notify("the TUI's subscription was removed; restarts will not show what was missed",
                        severity="warning", markup=False)

    def stop(self) -> None:
        self.workers.cancel_group(self, "watch")
        reader = self.reader
        if reader is not None:
            reader.poke()
