"""`hermes kanban tui`: the live board.

Threading (CONVENTIONS 10): the event loop never touches SQLite. Every store call runs in a `@work(thread=True)`
worker that opens its own `Board` (APSW connections are per thread here) and posts a message back; the app reacts
to the message on the event loop. The doorbell reader is a long-lived thread worker: it blocks on the board's FIFO,
reads the events after its cursor, and posts `BoardChanged`; the app then shows toasts and schedules one refresh
of the counts and the visible pages (never more than one in flight; bursts coalesce).

The TUI keeps its place in a subscription (`tui-<board>` by default): on start it summarises what completed,
blocked, gave up, crashed or timed out while it was away, and it acknowledges events once it has handled them.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Footer, Header, Input, Label
from textual.worker import get_current_worker

from hermes_cli.kanban.core.errors import BoardBusy, BoardReadOnly, HermesError, NotFound
from hermes_cli.kanban.core.models import STATUS_ORDER, Event, Task, TaskDetail, TaskStatus
from hermes_cli.kanban.core.paths import list_slugs, resolve
from hermes_cli.kanban.domain.board import Board
from hermes_cli.kanban.live.readers import RECHECK_S, TOAST_KINDS, EventReader, missed_summary, subscribe
from hermes_cli.kanban.views import snapshot as view

from .format import TOAST_BURST, burst_summary, clean, toast
from .screens.dialogs import BoardSwitcher, ConfirmScreen, CreateTaskScreen, HelpScreen, NewTask, PromptScreen
from .screens.error import BoardErrorScreen, ErrorChoice
from .widgets.column import TaskColumn
from .widgets.detail import DetailPane
from .widgets.field import TextField
from .widgets.status import StatusLine

#: how often the status line re-reads the dispatcher lease (its refreshes write no events)
STATUS_EVERY_S = 5.0
#: the health check (doctor, the same run as `hermes kanban doctor`) runs every this many status polls
HEALTH_EVERY = 6
#: minimum gap between two refreshes of counts and pages (a burst of events costs one refresh per gap)
REFRESH_GAP_S = 0.1
#: at most TOAST_BURST toasts per this many seconds; more are summed up in one toast
TOAST_WINDOW_S = 2.0
#: typing in the filter box applies after this pause
FILTER_DEBOUNCE_S = 0.25
#: verbs whose result is already announced by a toast from the doorbell
_TOASTED_VERBS = {"complete", "block"}
_PAST = {"unblock": "unblocked", "approve": "approved", "archive": "archived", "comment": "commented"}


@dataclass(frozen=True, slots=True)
class BoardRef:
    """Which board the app shows: a slug, or a pinned database path (None/None = the environment's default)."""

    slug: str | None = None
    db_path: str | None = None

    def open(self) -> Board:
        return Board.open(self.slug, self.db_path)

    @property
    def label(self) -> str:
        try:
            return resolve(self.slug, self.db_path).slug
        except HermesError:
            return self.slug or self.db_path or "default"


def subscription_for(slug: str) -> str:
    return "tui-" + re.sub(r"[^a-z0-9_.:-]", "-", slug.lower())[:59]


class KanbanApp(App[None]):
    """The live board: one column per status, a detail pane, actions, toasts and a status line."""

    #: absolute, so subclasses defined elsewhere (benchmarks, tests) find it too
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "hermes kanban"
    # Keys are handled in the order they arrive, on the focus the keys before them left, even when several arrive
    # in one read (a fast typist, a held key, a paste). Textual resolves a priority binding as it reads the key and
    # any other binding only once the key has travelled to the focused widget and bubbled back up, and
    # Widget.focus() moves the focus later still: keys read together were all sent to the widget focused when they
    # were read, so `right right right` moved one column and text typed right after tab landed in the old field. So
    # every board key is a priority binding (the column's keys too, see TaskColumn), the focus moves at once
    # (`_focus_now`), and check_action confines each key to where it applies: the board screen (dialogs and the
    # error screen have their own keys) and, for keys a text field uses itself, a focus outside text fields.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("left,h", "focus_column(-1)", "Prev column", show=False, priority=True),
        Binding("right,l", "focus_column(1)", "Next column", show=False, priority=True),
        Binding("tab", "focus_next", "Next field", show=False, priority=True),
        Binding("shift+tab", "focus_previous", "Previous field", show=False, priority=True),
        Binding("escape", "back", "Back", show=False, priority=True),
        Binding("enter", "submit_filter", "Apply the filter", show=False, priority=True),
        Binding("n", "create", "New", priority=True),
        Binding("c", "complete", "Complete", priority=True),
        Binding("b", "block", "Block", priority=True),
        Binding("u", "unblock", "Unblock", priority=True),
        Binding("a", "approve", "Approve", priority=True),
        Binding("x", "archive", "Archive", priority=True),
        Binding("m", "comment", "Comment", priority=True),
        Binding("slash", "filter", "Filter", priority=True),
        Binding("s", "switch_board", "Boards", priority=True),
        Binding("v", "toggle_archived", "Archived", show=False, priority=True),
        Binding("r", "reload", "Reload", show=False, priority=True),
    ]
    #: board keys that act on the columns (enabled while a column has the focus)
    _COLUMN_ACTIONS: ClassVar[frozenset[str]] = frozenset({"focus_column"})
    #: board keys that only the filter box takes (enabled while it has the focus)
    _FILTER_ACTIONS: ClassVar[frozenset[str]] = frozenset({"submit_filter"})
    #: the other board keys (enabled on the board screen unless a text field has the focus)
    _BOARD_ACTIONS: ClassVar[frozenset[str]] = frozenset({
        "back", "create", "complete", "block", "unblock", "approve", "archive", "comment", "filter", "switch_board",
        "toggle_archived", "reload"})

    # -- messages posted by the thread workers to the app ------------------------------------------------------------
    @dataclass
    class BoardOpened(Message):
        board_gen: int
        view_gen: int
        slug: str
        subscription: str | None
        counts: dict[str, int]
        pages: dict[str, list[Task]]
        last_event_id: int
        missed: dict[str, int]
        missed_recent: list[Event]
        titles: dict[str, str]

    @dataclass
    class BoardFailed(Message):
        board_gen: int
        error: HermesError

    @dataclass
    class BoardChanged(Message):
        board_gen: int
        events: list[Event]
        cursor: int
        titles: dict[str, str] = field(default_factory=dict)

    @dataclass
    class Refreshed(Message):
        view_gen: int
        counts: dict[str, int] | None  # None: the refresh failed (reported separately)
        pages: dict[str, dict[int, list[Task]]]

    @dataclass
    class PageLoaded(Message):
        view_gen: int
        status: str
        page: int
        tasks: list[Task]

    @dataclass
    class DetailLoaded(Message):
        board_gen: int
        detail: TaskDetail
        log: list[str]
        log_name: str

    @dataclass
    class StatusLoaded(Message):
        board_gen: int
        dispatcher: view.DispatcherInfo | None
        health: view.HealthInfo | None

    @dataclass
    class ActionDone(Message):
        verb: str
        task_id: str | None
        result: Any

    @dataclass
    class StoreFailed(Message):
        board_gen: int
        what: str
        error: HermesError

    @dataclass
    class BoardsListed(Message):
        slugs: list[str]

    @dataclass
    class FilterKeyed(Message):
        """Posted to the filter box by enter (`clear` False) or escape (`clear` True): it bubbles back to the app
        once the box has taken the keys typed before it, so the filter applied is the text as typed."""

        clear: bool

    #: whether the archived column is shown
    show_archived: reactive[bool] = reactive(False)

    def __init__(self, board: str | None = None, db_path: str | None = None, subscription: str | None = None) -> None:
        super().__init__()
        self.ref = BoardRef(board, db_path)
        self.subscription_override = subscription
        self.flt = view.Filter()
        #: bumped when another board is opened: messages about an older board are ignored
        self.board_gen = 0
        #: bumped when what the columns show changes (board or filter): older pages are ignored
        self.view_gen = 0
        self.board_ready = False
        self.selected: Task | None = None
        self._watch_reader: EventReader | None = None
        #: newest event id the app has handled (toasts shown); the watcher acknowledges up to here
        self.handled_upto = 0
        self._refresh_running = False
        self._refresh_again = False
        self._last_refresh = 0.0
        self._filter_timer: Timer | None = None
        self._status_polls = 0
        self._error_screen: BoardErrorScreen | None = None
        self._toast_times: deque[float] = deque()
        self._toast_backlog: list[Event] = []
        self._backlog_timer: Timer | None = None

    # -- layout ------------------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filter-bar"):
            yield Label("filter ", id="filter-label")
            yield TextField(placeholder="title text, id prefix, tenant:NAME — enter to keep, escape to clear",
                            id="filter")
        with Horizontal(id="main"):
            with Horizontal(id="columns"):
                for status in STATUS_ORDER:
                    yield TaskColumn(str(status))
            yield DetailPane(id="detail")
        yield StatusLine(id="status")
        yield Footer()

    @property
    def columns(self) -> list[TaskColumn]:
        return list(self.query(TaskColumn))

    def visible_columns(self) -> list[TaskColumn]:
        return [c for c in self.columns if (c.status != TaskStatus.ARCHIVED or self.show_archived)
                and (c.status != TaskStatus.TRIAGE or c.count)]

    def column(self, status: str) -> TaskColumn:
        return self.query_one(f"#col-{status}", TaskColumn)

    def on_mount(self) -> None:
        self.column("ready").focus()
        self.open_board()
        self.set_interval(STATUS_EVERY_S, self.poll_status)

    def on_unmount(self) -> None:
        self.stop_watching()

    # -- keys --------------------------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Where each board key applies (see BINDINGS); anywhere else the key goes to the focused widget."""
        if action in self._COLUMN_ACTIONS or action in self._FILTER_ACTIONS or action in self._BOARD_ACTIONS:
            stack = self.screen_stack
            if not stack or self.screen is not stack[0]:
                return False
            focused = self.focused
            if action in self._COLUMN_ACTIONS:
                return isinstance(focused, TaskColumn)
            if action in self._FILTER_ACTIONS:
                return focused is not None and focused.id == "filter"
            return action == "back" or not isinstance(focused, Input)
        return True

    @staticmethod
    def _focus_now(widget: Widget) -> None:
        """Move the focus before the next key is read (Widget.focus() only schedules it)."""
        widget.screen.set_focus(widget)

    # -- opening a board ---------------------------------------------------------------------------------------------
    def open_board(self) -> None:
        self.stop_watching()
        self.board_gen += 1
        self.view_gen += 1
        self.board_ready = False
        self.selected = None
        for col in self.columns:
            col.reset(self.view_gen)
        status = self.query_one(StatusLine)
        status.board = self.ref.label
        status.dispatcher_known = False
        status.health = None
        self.sub_title = clean(self.ref.label)
        self.load_board(self.ref, self.board_gen, self.view_gen, self.flt, self.subscription_override)

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def load_board(self, ref: BoardRef, board_gen: int, view_gen: int, flt: view.Filter,
                   sub_override: str | None) -> None:
        with self._reporting("opening the board", board_gen, opening=True), ref.open() as b:
            wanted = sub_override or subscription_for(b.slug)
            sub_name: str | None = wanted  # None below when the board is read-only
            try:
                sub, _ = subscribe(b, wanted)
                since = sub.cursor
            except BoardReadOnly:
                sub_name, since = None, None  # a read-only board can still be watched, just not remembered
            with b.db.read():
                counts = view.counts(b, flt)
                pages = {str(s): view.column_page(b, str(s), 0, flt) for s in STATUS_ORDER}
                last = b.last_event_id()
                missed, recent = ({}, []) if since is None else missed_summary(b, since, last, TOAST_KINDS)
                titles = view.titles(b, [e.task_id for e in recent if e.task_id])
            self.post_message(self.BoardOpened(board_gen, view_gen, b.slug, sub_name, counts, pages, last, missed,
                                               recent, titles))

    @on(BoardOpened)
    def _board_opened(self, msg: BoardOpened) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if msg.board_gen != self.board_gen:
            return
        self.board_ready = True
        self.dismiss_error()
        self._apply_counts(msg.counts, msg.view_gen)
        for col in self.columns:
            col.set_page(0, msg.pages.get(col.status, []), msg.view_gen)
        status = self.query_one(StatusLine)
        status.board = msg.slug
        status.last_event = msg.last_event_id
        self.handled_upto = msg.last_event_id
        if msg.missed:
            self._toast_missed(msg.missed, msg.missed_recent, msg.titles)
        focused = self.focused if isinstance(self.focused, TaskColumn) else None
        if focused is None or focused.count == 0:
            first = next((c for c in self.visible_columns() if c.count), None)
            (first or self.column("ready")).focus()
        self.watch_board(self.ref, msg.board_gen, msg.subscription, msg.last_event_id)
        self._status_polls = 0
        self.poll_status()

    def show_toasts(self, events: list[Event], titles: dict[str, str]) -> None:
        """One toast per event, at most TOAST_BURST per TOAST_WINDOW_S; the rest become one summary toast."""
        now = time.monotonic()
        while self._toast_times and now - self._toast_times[0] > TOAST_WINDOW_S:
            self._toast_times.popleft()
        for ev in events:
            if len(self._toast_times) < TOAST_BURST and not self._toast_backlog:
                head, body, severity = toast(ev, titles.get(ev.task_id or ""))
                self.notify(body, title=head, severity=severity, markup=False)  # type: ignore[arg-type]
                self._toast_times.append(now)
            else:
                self._toast_backlog.append(ev)
        if self._toast_backlog and self._backlog_timer is None:
            self._backlog_timer = self.set_timer(TOAST_WINDOW_S, self._flush_toast_backlog)

    def _flush_toast_backlog(self) -> None:
        self._backlog_timer = None
        rest, self._toast_backlog = self._toast_backlog, []
        if rest:
            self.notify(burst_summary(rest), title=f"…and {len(rest)} more", markup=False)
            self._toast_times.append(time.monotonic())

    def _toast_missed(self, missed: dict[str, int], recent: list[Event], titles: dict[str, str]) -> None:
        total = sum(missed.values())
        order = {k: i for i, k in enumerate(TOAST_KINDS)}
        counts = ", ".join(f"{n} {k.replace('_', ' ')}"
                           for k, n in sorted(missed.items(), key=lambda kv: (-kv[1], order.get(kv[0], 99))))
        self.notify(counts, title=f"While you were away ({total})", markup=False, timeout=10)
        for ev in recent[-TOAST_BURST:]:
            head, body, severity = toast(ev, titles.get(ev.task_id or ""))
            self.notify(body, title=head, severity=severity, markup=False)  # type: ignore[arg-type]

    # -- the doorbell watcher ----------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="watch", exit_on_error=False)
    def watch_board(self, ref: BoardRef, board_gen: int, subscription: str | None, after: int) -> None:
        worker = get_current_worker()
        with self._reporting("watching the board", board_gen), ref.open() as b, \
                EventReader(b, name="tui", subscription=subscription, after=after) as reader:
            self._watch_reader = reader
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
                if self._watch_reader is reader:
                    self._watch_reader = None
                self._acknowledge(reader)

    def _acknowledge(self, reader: EventReader) -> None:
        """Persist the subscription cursor up to what the app has handled (runs in the watcher thread)."""
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

    def stop_watching(self) -> None:
        self.workers.cancel_group(self, "watch")
        reader = self._watch_reader
        if reader is not None:
            reader.poke()

    @on(BoardChanged)
    def _board_changed(self, msg: BoardChanged) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if msg.board_gen != self.board_gen:
            return
        self.show_toasts([e for e in msg.events if e.kind in TOAST_KINDS], msg.titles)
        self.handled_upto = max(self.handled_upto, msg.cursor)
        self.query_one(StatusLine).last_event = msg.events[-1].id
        self.request_refresh()
        pane = self.query_one(DetailPane)
        if pane.has_class("-open") and pane.task_id in {e.task_id for e in msg.events}:
            self.load_detail(self.ref, pane.task_id, self.board_gen)
        if any(e.kind.startswith("dispatch") for e in msg.events):
            self.poll_status()

    # -- counts and pages --------------------------------------------------------------------------------------------
    def request_refresh(self) -> None:
        """Reload counts and visible pages soon; at most one refresh in flight, at most one per REFRESH_GAP_S."""
        if not self.board_ready:
            return
        if self._refresh_running:
            self._refresh_again = True
            return
        wait = self._last_refresh + REFRESH_GAP_S - time.monotonic()
        self._refresh_running = True
        if wait > 0:
            self.set_timer(wait, self._start_refresh)
        else:
            self._start_refresh()

    def _start_refresh(self) -> None:
        self._last_refresh = time.monotonic()
        wanted = {c.status: c.visible_pages() for c in self.visible_columns()}
        self.refresh_view(self.ref, self.board_gen, self.view_gen, self.flt, wanted)

    @work(thread=True, group="refresh", exit_on_error=False)
    def refresh_view(self, ref: BoardRef, board_gen: int, view_gen: int, flt: view.Filter,
                     wanted: dict[str, list[int]]) -> None:
        counts: dict[str, int] | None = None
        pages: dict[str, dict[int, list[Task]]] = {}
        try:
            with self._reporting("refreshing", board_gen), ref.open() as b, b.db.read():
                counts = view.counts(b, flt)
                pages = {s: {p: view.column_page(b, s, p, flt) for p in ps} for s, ps in wanted.items()}
        finally:
            # Always answer, even after a failure: the app allows one refresh in flight and waits for this.
            self.post_message(self.Refreshed(view_gen, counts, pages))

    @on(Refreshed)
    def _refreshed(self, msg: Refreshed) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        self._refresh_running = False
        if msg.counts is not None and msg.view_gen == self.view_gen:
            self._apply_counts(msg.counts, msg.view_gen)
            for status, pages in msg.pages.items():
                self.column(status).replace_pages(pages, msg.view_gen)
        if self._refresh_again:
            self._refresh_again = False
            self.request_refresh()

    def _apply_counts(self, counts: dict[str, int], view_gen: int) -> None:
        if view_gen != self.view_gen:
            return
        for col in self.columns:
            col.count = counts.get(col.status, 0)
        self.query_one(StatusLine).total = sum(n for s, n in counts.items() if s != TaskStatus.ARCHIVED)

    @on(TaskColumn.PageWanted)
    def _page_wanted(self, msg: TaskColumn.PageWanted) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if self.board_ready and msg.generation == self.view_gen:
            self.load_page(self.ref, self.board_gen, self.view_gen, self.flt, msg.column.status, msg.page)

    @work(thread=True, group="pages", exit_on_error=False)
    def load_page(self, ref: BoardRef, board_gen: int, view_gen: int, flt: view.Filter, status: str,
                  page: int) -> None:
        with self._reporting("loading tasks", board_gen), ref.open() as b:
            self.post_message(self.PageLoaded(view_gen, status, page, view.column_page(b, status, page, flt)))

    @on(PageLoaded)
    def _page_loaded(self, msg: PageLoaded) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if msg.view_gen == self.view_gen:
            self.column(msg.status).set_page(msg.page, msg.tasks, msg.view_gen)

    # -- selection and the detail pane -------------------------------------------------------------------------------
    @on(TaskColumn.Highlighted)
    def _highlighted(self, msg: TaskColumn.Highlighted) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        self.selected = msg.task
        pane = self.query_one(DetailPane)
        if msg.task is not None and pane.has_class("-open") and pane.task_id != msg.task.id:
            self.load_detail(self.ref, msg.task.id, self.board_gen)

    @on(TaskColumn.Selected)
    def _selected(self, msg: TaskColumn.Selected) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        self.open_detail(msg.task)

    def open_detail(self, task: Task) -> None:
        pane = self.query_one(DetailPane)
        pane.add_class("-open")
        pane.show_message(f"loading {task.id}…")
        self.load_detail(self.ref, task.id, self.board_gen)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def load_detail(self, ref: BoardRef, task_id: str, board_gen: int) -> None:
        with self._reporting(f"loading {task_id}", board_gen), ref.open() as b:
            detail = b.detail(task_id, events=20)
            log = view.log_tail(b, task_id)
            self.post_message(self.DetailLoaded(board_gen, detail, log, f"logs/{task_id}.log"))

    @on(DetailLoaded)
    def _detail_loaded(self, msg: DetailLoaded) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if msg.board_gen == self.board_gen:
            self.query_one(DetailPane).show(msg.detail, msg.log, msg.log_name)

    def close_detail(self) -> bool:
        pane = self.query_one(DetailPane)
        if not pane.has_class("-open"):
            return False
        pane.remove_class("-open")
        return True

    # -- navigation --------------------------------------------------------------------------------------------------
    def action_focus_column(self, delta: int) -> None:
        cols = self.visible_columns()
        current = self.focused if isinstance(self.focused, TaskColumn) else None
        index = cols.index(current) if current in cols else 0
        self._focus_now(cols[(index + delta) % len(cols)])

    async def action_back(self) -> None:
        # async only to match App.action_back (which this replaces: escape never pops screens here); textual's
        # action dispatch awaits it, so it runs exactly as the sync version did.
        box = self.query_one("#filter", Input)
        if self.focused is box:  # not box.has_focus: that follows the focus only once the box has been told
            # Keys typed before this escape may still be on their way to the box: clear it once they are in
            # (FilterKeyed), and hand the focus back to the columns now, for the keys that follow.
            self._focus_now(self.column("ready"))
            box.post_message(self.FilterKeyed(clear=True))
        elif not self.close_detail() and self.flt.active:
            box.value = ""
            self.apply_filter("")
            self.hide_filter()

    def action_toggle_archived(self) -> None:
        self.show_archived = not self.show_archived

    def watch_show_archived(self, show: bool) -> None:
        self.column("archived").set_class(not show, "-hidden")
        if show:
            self.request_refresh()
        elif self.focused is self.column("archived"):
            self._focus_now(self.column("done"))

    def action_reload(self) -> None:
        self.open_board()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- filter ------------------------------------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one("#filter-bar").add_class("-visible")
        self._focus_now(self.query_one("#filter", Input))

    def hide_filter(self) -> None:
        if not self.flt.active:
            self.query_one("#filter-bar").remove_class("-visible")
        if not isinstance(self.focused, TaskColumn):
            self._focus_now(self.column("ready"))


    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        box = event.input
        # the box's text when the timer fires, not this event's: a Changed that arrives after escape cleared the
        # box (its keys were typed before the escape) must not bring the old text back
        self._filter_timer = self.set_timer(FILTER_DEBOUNCE_S, lambda: self.apply_filter(box.value))

    def action_submit_filter(self) -> None:
        """Enter in the filter box: the columns get the focus now; the filter is applied once the box has the keys
        typed before the enter (FilterKeyed)."""
        cols = [c for c in self.visible_columns() if c.count] or self.visible_columns()
        self._focus_now(cols[0])
        self.query_one("#filter", Input).post_message(self.FilterKeyed(clear=False))

    @on(FilterKeyed)
    def _filter_keyed(self, msg: FilterKeyed) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if self._filter_timer is not None:
            self._filter_timer.stop()
        box = self.query_one("#filter", Input)
        if msg.clear:
            box.value = ""
        self.apply_filter(box.value)
        if msg.clear:
            self.hide_filter()

    def apply_filter(self, text: str) -> None:
        flt = view.Filter.parse(text)
        if flt == self.flt:
            return
        self.flt = flt
        self.view_gen += 1
        for col in self.columns:
            col.reset(self.view_gen)
        self.query_one(StatusLine).filter_text = str(flt)
        self._refresh_running = False  # results of an in-flight refresh are for the old filter: ignored
        self.request_refresh()

    # -- actions -----------------------------------------------------------------------------------------------------
    def _target(self) -> Task | None:
        if not self.board_ready:
            self.notify("the board is not open", severity="warning")
            return None
        # The card under the focused column's cursor now, not the last Highlighted message: with `down c` in one
        # read, that message is still on its way when `c` is handled.
        focused = self.focused
        task = focused.highlighted_task if isinstance(focused, TaskColumn) else self.selected
        if task is None:
            self.notify("no task selected: move the cursor to a card first", severity="warning")
        return task

    def action_create(self) -> None:
        if not self.board_ready:
            self.notify("the board is not open", severity="warning")
            return

        def created(new: NewTask | None) -> None:
            if new is not None:
                self.act("create_task", None, title=new.title, priority=new.priority, tenant=new.tenant,
                         body=new.body)

        self.push_screen(CreateTaskScreen(), created)

    def action_complete(self) -> None:
        task = self._target()
        if task is None:
            return
        if task.status == TaskStatus.RUNNING:
            self._confirm(f"{task.id} is running (run {task.current_run_id}).\n"
                          "Force-complete it and close the live run?",
                          "Force-complete", lambda: self.act("complete", task.id, force=True))
        else:
            self.act("complete", task.id)

    def action_block(self) -> None:
        task = self._target()
        if task is None:
            return

        def with_reason(reason: str | None) -> None:
            if reason is None:
                return
            if task.status == TaskStatus.RUNNING:
                self._confirm(f"{task.id} is running (run {task.current_run_id}).\nBlock it and close the live run?",
                              "Block", lambda: self.act("block", task.id, reason=reason or None, force=True))
            else:
                self.act("block", task.id, reason=reason or None)

        self.push_screen(PromptScreen(f"Block {task.id}: why? (enter to block)", placeholder="reason",
                                      allow_empty=True), with_reason)

    def action_unblock(self) -> None:
        task = self._target()
        if task is not None:
            self.act("unblock", task.id)

    def action_approve(self) -> None:
        task = self._target()
        if task is not None:
            self.act("approve", task.id)

    def action_archive(self) -> None:
        task = self._target()
        if task is not None:
            self._confirm(f"Archive {task.id} “{clean(task.title)}”?\nIts children stop waiting for it.", "Archive",
                          lambda: self.act("archive", task.id))

    def action_comment(self) -> None:
        task = self._target()
        if task is None:
            return

        def with_text(text: str | None) -> None:
            if text:
                self.act("comment", task.id, body=text, author="tui")

        self.push_screen(PromptScreen(f"Comment on {task.id}", placeholder="comment"), with_text)

    def _confirm(self, question: str, yes: str, then: Callable[[], object]) -> None:
        def answered(ok: bool | None) -> None:
            if ok:
                then()

        self.push_screen(ConfirmScreen(question, yes=yes), answered)

    def act(self, verb: str, task_id: str | None, **kwargs: Any) -> None:
        self.perform(self.ref, self.board_gen, verb, task_id, kwargs)

    @work(thread=True, group="act", exit_on_error=False)
    def perform(self, ref: BoardRef, board_gen: int, verb: str, task_id: str | None,
                kwargs: dict[str, Any]) -> None:
        with self._reporting(f"{verb.replace('_task', '')} {task_id or ''}".strip(), board_gen), ref.open() as b:
            fn = getattr(b, verb)
            result = fn(task_id, **kwargs) if task_id is not None else fn(**kwargs)
            self.post_message(self.ActionDone(verb, task_id, result))

    @on(ActionDone)
    def _action_done(self, msg: ActionDone) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if msg.verb in _TOASTED_VERBS:
            return
        if msg.verb == "create_task":
            task, created = msg.result
            self.notify(clean(task.title), title=f"created {task.id}" if created else f"exists: {task.id}",
                        markup=False)
        elif isinstance(msg.result, Task):
            done = _PAST.get(msg.verb, msg.verb)
            self.notify(clean(msg.result.title), title=f"{done} {msg.task_id} → {msg.result.status}", markup=False)
        else:
            self.notify(f"on {msg.task_id}", title=_PAST.get(msg.verb, msg.verb), markup=False)

    # -- boards ------------------------------------------------------------------------------------------------------
    def action_switch_board(self) -> None:
        self.list_boards()

    @work(thread=True, exclusive=True, group="boards", exit_on_error=False)
    def list_boards(self) -> None:
        with self._reporting("listing boards", self.board_gen):
            self.post_message(self.BoardsListed(list_slugs()))

    @on(BoardsListed)
    def _boards_listed(self, msg: BoardsListed) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        current = self.ref.label
        slugs = sorted(set(msg.slugs) | {current})

        def chosen(slug: str | None) -> None:
            if slug and (slug != current or not self.board_ready):
                self.switch_board(BoardRef(slug))

        self.push_screen(BoardSwitcher(slugs, current), chosen)

    def switch_board(self, ref: BoardRef) -> None:
        self.ref = ref
        self.close_detail()
        self.open_board()

    # -- status line -------------------------------------------------------------------------------------------------
    def poll_status(self) -> None:
        if self.board_ready:
            with_health = self._status_polls % HEALTH_EVERY == 0
            self._status_polls += 1
            self.load_status(self.ref, self.board_gen, with_health)

    @work(thread=True, exclusive=True, group="status", exit_on_error=False)
    def load_status(self, ref: BoardRef, board_gen: int, with_health: bool) -> None:
        with self._reporting("reading the dispatcher lease", board_gen), ref.open() as b:
            disp = view.dispatcher(b)
            health = view.health(b) if with_health else None
            self.post_message(self.StatusLoaded(board_gen, disp, health))

    @on(StatusLoaded)
    def _status_loaded(self, msg: StatusLoaded) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if msg.board_gen != self.board_gen:
            return
        status = self.query_one(StatusLine)
        status.dispatcher = msg.dispatcher
        status.dispatcher_known = True
        if msg.health is not None:
            status.health = msg.health

    # -- errors ------------------------------------------------------------------------------------------------------
    @contextmanager
    def _reporting(self, what: str, board_gen: int, *, opening: bool = False) -> Iterator[None]:
        """Run a worker's store calls; turn any failure into a message for the app (never a dead thread)."""
        try:
            yield
        except HermesError as err:
            self.post_message(self.BoardFailed(board_gen, err) if opening else self.StoreFailed(board_gen, what, err))
        except Exception as exc:  # a bug: show it instead of letting the worker die silently
            bug = HermesError(f"internal error while {what}: {exc.__class__.__name__}: {exc}")
            self.post_message(self.BoardFailed(board_gen, bug) if opening else self.StoreFailed(board_gen, what, bug))

    @on(StoreFailed)
    def _store_failed(self, msg: StoreFailed) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if msg.board_gen != self.board_gen:
            return
        if msg.error.exit_code == 4 and not isinstance(msg.error, BoardBusy):
            self.show_error(msg.error)
        else:
            self.notify(clean(msg.error.message), title=f"{msg.what} failed", severity="error", markup=False,
                        timeout=10)

    @on(BoardFailed)
    def _board_failed(self, msg: BoardFailed) -> None:
        if not self.is_running:
            return  # shutting down: widgets are being removed
        if msg.board_gen == self.board_gen:
            self.show_error(msg.error)

    def show_error(self, error: HermesError) -> None:
        self.board_ready = False
        self.stop_watching()
        if self._error_screen is not None:
            return
        screen = BoardErrorScreen(self.ref.label, error)
        self._error_screen = screen

        def chosen(choice: ErrorChoice | None) -> None:
            self._error_screen = None
            if choice == "dismissed":
                return
            if choice == "quit":
                self.exit()
            elif choice == "switch":
                self.action_switch_board()
            else:
                self.open_board()

        self.push_screen(screen, chosen)

    def dismiss_error(self) -> None:
        if self._error_screen is not None and self.screen is self._error_screen:
            self._error_screen.dismiss("dismissed")
