"""The hub view's data side: `HubRef` (which hub and boards), `HubLoader` (the board screen's store calls, read from
the hub's latest task snapshots through `hermes_cli.kanban.hub.view.HubView`) and `HubWatcher` (polls the hub's acks
about every second and posts `BoardChanged` when new events arrived). The board screen's code runs unchanged on top
of them (screens/hub.py); nothing here can write: a hub view cannot change a task."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

from textual import work
from textual.message import Message
from textual.worker import get_current_worker

from hermes_cli.kanban.core.errors import BoardReadOnly
from hermes_cli.kanban.core.hubconf import redact
from hermes_cli.kanban.core.models import STATUS_ORDER
from hermes_cli.kanban.hub.view import BoardMark, HubView
from hermes_cli.kanban.live.readers import TOAST_KINDS
from hermes_cli.kanban.store.hub.link import HubUnreachable
from hermes_cli.kanban.views import snapshot as view

from .format import clean
from .loader import BoardLoader
from .session import BoardRef
from .watcher import DoorbellWatcher

#: the one line every refused action key shows
READ_ONLY = "read-only: a hub view cannot change tasks; run it on the board's host"
#: how often the watcher asks the hub whether new events arrived (the hub sends no NOTIFY: a poll of its acks)
POLL_S = 1.0
#: the label of the view of every board on the hub (a board's label is HOST:SLUG, never with a space)
ALL_BOARDS = "all boards"


@dataclass(frozen=True, slots=True)
class HubRef(BoardRef):
    """Boards on a hub: `slug` is the board as `hermes kanban hub show --board` takes it (an id, a slug or HOST:SLUG;
    None: every board on the hub). The URL may hold a password: it is never shown (repr included), only `hub`."""

    url: str = field(default="", repr=False)

    def open(self) -> NoReturn:
        """A hub view never opens a local Board (that is what would write): any code path that tries is refused."""
        raise BoardReadOnly(READ_ONLY)

    def open_hub(self) -> HubView:
        return HubView(self.url, self.slug)

    @property
    def label(self) -> str:
        return self.slug or ALL_BOARDS

    @property
    def hub(self) -> str:
        return redact(self.url)


def _hub(ref: BoardRef) -> HubView:
    if not isinstance(ref, HubRef):
        raise TypeError(f"a hub view was handed a local board reference ({ref.label})")
    return ref.open_hub()


class HubLoader(BoardLoader):
    """BoardLoader's workers and messages, read from the hub at `url`. `perform` refuses every action."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def load_board(self, ref: BoardRef, board_gen: int, view_gen: int, flt: view.Filter,
                   sub_override: str | None) -> None:
        with self.reporting("opening the hub", board_gen, opening=True), _hub(ref) as hub:
            counts = hub.counts(flt.search, flt.tenant)
            pages = {str(s): hub.column_page(str(s), 0, flt.search, flt.tenant) for s in STATUS_ORDER}
            last = sum(m.acked for m in hub.marks())
            self.post_message(self.BoardOpened(board_gen, view_gen, ref.label, None, counts, pages, last, {}, [], {}))

    @work(thread=True, group="refresh", exit_on_error=False)
    def refresh_view(self, ref: BoardRef, board_gen: int, view_gen: int, flt: view.Filter,
                     wanted: dict[str, list[int]]) -> None:
        counts: dict[str, int] | None = None
        pages: dict[str, dict[int, list[Any]]] = {}
        try:
            with self.reporting("refreshing from the hub", board_gen), _hub(ref) as hub:
                counts = hub.counts(flt.search, flt.tenant)
                pages = {s: {p: hub.column_page(s, p, flt.search, flt.tenant) for p in ps} for s, ps in wanted.items()}
        finally:
            # Always answer, even after a failure: the screen allows one refresh in flight and waits for this.
            self.post_message(self.Refreshed(view_gen, counts, pages))

    @work(thread=True, group="pages", exit_on_error=False)
    def load_page(self, ref: BoardRef, board_gen: int, view_gen: int, flt: view.Filter, status: str,
                  page: int) -> None:
        with self.reporting("loading tasks from the hub", board_gen), _hub(ref) as hub:
            self.post_message(self.PageLoaded(view_gen, status, page,
                                              hub.column_page(status, page, flt.search, flt.tenant)))

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def load_detail(self, ref: BoardRef, task_id: str, board_gen: int) -> None:
        with self.reporting(f"loading {task_id} from the hub", board_gen), _hub(ref) as hub:
            detail, board = hub.detail(task_id, events=20)
            note = [f"board {board}: the hub keeps tasks and events; runs, links, comments and logs stay on its host"]
            self.post_message(self.DetailLoaded(board_gen, detail, note, f"on {board.split(':', 1)[0]}"))

    @work(thread=True, exclusive=True, group="status", exit_on_error=False)
    def load_status(self, ref: BoardRef, board_gen: int, with_health: bool) -> None:
        """Nothing to read: a hub view has no dispatcher lease or doctor (the watcher reports the hub's state)."""

    @work(thread=True, group="act", exit_on_error=False)
    def perform(self, ref: BoardRef, board_gen: int, verb: str, task_id: str | None,
                kwargs: dict[str, Any]) -> None:
        self.post_message(self.StoreFailed(board_gen, verb, BoardReadOnly(READ_ONLY)))

    @work(thread=True, exclusive=True, group="boards", exit_on_error=False)
    def list_boards(self, board_gen: int) -> None:
        """The boards on the hub (HOST:SLUG), for the switcher; `ALL_BOARDS` shows them all at once."""
        with self.reporting("listing the hub's boards", board_gen), HubView(self.url) as hub:
            self.post_message(self.BoardsListed([ALL_BOARDS, *(m.label for m in hub.marks())]))


class HubWatcher(DoorbellWatcher):
    """Polls the hub's acks every POLL_S while watching: when a board's newest event changed, posts `HubMoved` (the
    status line's figures) and, with the new events, `BoardChanged` (toasts, a refresh, the detail pane reloaded)."""

    @dataclass
    class HubMoved(Message):
        board_gen: int
        hub: str
        boards: list[str]
        last_at: float | None
        marks: list[BoardMark] = field(default_factory=list)

    def __init__(self, loader: BoardLoader) -> None:
        super().__init__(loader)
        #: polling the hub (the worker is running)
        self.watching = False
        #: completed polls (tests wait on it)
        self.polls = 0

    @work(thread=True, exclusive=True, group="watch", exit_on_error=False)
    def start(self, ref: BoardRef, board_gen: int, subscription: str | None, after: int) -> None:
        worker = get_current_worker()
        with self.loader.reporting("watching the hub", board_gen), _hub(ref) as hub:
            marks = hub.marks()
            self.post_message(self._moved(board_gen, hub, marks))
            self.watching = True
            down = False
            try:
                while not worker.is_cancelled:
                    deadline = time.monotonic() + POLL_S
                    while not worker.is_cancelled and time.monotonic() < deadline:
                        time.sleep(0.05)  # wake often enough that stop() ends this worker within ~50 ms
                    if worker.is_cancelled:
                        break
                    try:
                        now = hub.marks()
                    except HubUnreachable as err:
                        # A dropped connection or a hub restarting: say so once and keep polling (the link
                        # reconnects on the next call); the columns keep what they showed.
                        if not down:
                            self.say(f"{clean(err.message)}; retrying every {POLL_S:g}s")
                        down = True
                        continue
                    if down:
                        self.say(f"hub {hub.name} is back")
                        down = False
                    self.polls += 1
                    if now == marks:
                        continue
                    events = hub.events_between(marks, now)
                    marks = now
                    self.post_message(self._moved(board_gen, hub, now))
                    if events:
                        ids = [e.task_id for e in events
                               if e.kind in TOAST_KINDS and e.task_id and "title" not in e.payload]
                        titles = hub.titles(ids) if ids else {}
                        self.post_message(self.BoardChanged(board_gen, events, 0, titles))
            finally:
                self.watching = False

    def say(self, message: str) -> None:
        """A warning toast from the watcher's thread."""
        self.app.call_from_thread(self.notify, message, severity="warning", markup=False)

    def _moved(self, board_gen: int, hub: HubView, marks: list[BoardMark]) -> HubMoved:
        times = [m.last_at for m in marks if m.last_at is not None]
        return self.HubMoved(board_gen, hub.name, [m.label for m in marks], max(times) if times else None, marks)
