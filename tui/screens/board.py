"""The board screen: one column per status, the filter bar, the detail pane and the status line, with the board's
keys. It holds what it shows (which board, the filter, the generations that tell stale results from fresh ones) and
hands every store call to its `BoardLoader` and the doorbell to its `DoorbellWatcher`; their results come back up as
messages (attributes down, messages up). Toasts are the `Toaster`'s job, the action dialogs `TaskActions`'."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header, Input

from hermes_cli.kanban.core.models import Task, TaskStatus
from hermes_cli.kanban.live.readers import TOAST_KINDS
from hermes_cli.kanban.views import snapshot as view

from ..format import clean
from ..loader import BoardLoader
from ..session import BoardRef
from ..toasts import Toaster
from ..watcher import DoorbellWatcher
from ..widgets.column import TaskColumn
from ..widgets.columns import BoardColumns
from ..widgets.detail import DetailPane
from ..widgets.filter import FilterBar
from ..widgets.status import StatusLine
from .actions import TaskActions

#: how often the status line re-reads the dispatcher lease (its refreshes write no events)
STATUS_EVERY_S = 5.0
#: the health check (doctor, the same run as `hermes kanban doctor`) runs every this many status polls
HEALTH_EVERY = 6


class BoardScreen(Screen[None]):
    """The live board: columns, detail pane, status line, and the keys that move and act on them."""

    # Keys are handled in the order they arrive, on the focus the keys before them left, even when several arrive
    # in one read (a fast typist, a held key, a paste). Textual resolves a priority binding as it reads the key and
    # any other binding only once the key has travelled to the focused widget and bubbled back up, and
    # Widget.focus() moves the focus later still: keys read together were all sent to the widget focused when they
    # were read, so `right right right` moved one column and text typed right after tab landed in the old field. So
    # every board key is a priority binding (the column's keys too, see TaskColumn; tab and shift+tab are the app's,
    # for the dialogs too), the focus moves at once (`focus_now`), and check_action confines each key to where it
    # applies: this screen while it is on top and, for keys a text field uses itself, a focus outside text fields.
    BINDINGS: ClassVar[list[BindingType]] = [
        # the app's keys, listed first so the footer shows them first (as the app's own, they work on every screen)
        Binding("q", "app.quit", "Quit"),
        Binding("question_mark", "app.help", "Help"),
        Binding("left,h", "focus_column(-1)", "Prev column", show=False, priority=True),
        Binding("right,l", "focus_column(1)", "Next column", show=False, priority=True),
        Binding("escape", "back", "Back", show=False, priority=True),
        Binding("enter", "submit_filter", "Apply the filter", show=False, priority=True),
        Binding("n", "create", "New", priority=True),
        Binding("c", "act_on('complete')", "Complete", priority=True),
        Binding("b", "act_on('block')", "Block", priority=True),
        Binding("u", "act_on('unblock')", "Unblock", priority=True),
        Binding("a", "act_on('approve')", "Approve", priority=True),
        Binding("x", "act_on('archive')", "Archive", priority=True),
        Binding("m", "act_on('comment')", "Comment", priority=True),
        Binding("slash", "filter", "Filter", priority=True),
        Binding("s", "switch_board", "Boards", priority=True),
        Binding("v", "toggle_archived", "Archived", show=False, priority=True),
        Binding("r", "reload", "Reload", show=False, priority=True),
    ]
    #: board keys that act on the columns (enabled while a column has the focus)
    COLUMN_ACTIONS: ClassVar[frozenset[str]] = frozenset({"focus_column"})
    #: board keys that only the filter box takes (enabled while it has the focus)
    FILTER_ACTIONS: ClassVar[frozenset[str]] = frozenset({"submit_filter"})
    #: the other board keys (enabled on this screen unless a text field has the focus)
    BOARD_ACTIONS: ClassVar[frozenset[str]] = frozenset({
        "back", "create", "act_on", "filter", "switch_board", "toggle_archived", "reload"})

    #: the status line's class (the hub view's says which hub instead of which dispatcher)
    STATUS_LINE: ClassVar[type[StatusLine]] = StatusLine

    #: whether the archived column is shown
    show_archived: reactive[bool] = reactive(False)

    def __init__(self, ref: BoardRef, subscription: str | None = None) -> None:
        super().__init__()
        self.ref = ref
        self.subscription_override = subscription
        self.flt = view.Filter()
        #: bumped when another board is opened: messages about an older board are ignored
        self.board_gen = 0
        #: bumped when what the columns show changes (board or filter): older pages are ignored
        self.view_gen = 0
        self.board_ready = False
        self.selected: Task | None = None
        self.status_polls = 0
        self.loader = BoardLoader()
        self.watcher = DoorbellWatcher(self.loader)
        self.toaster = Toaster(self)
        self.actions = TaskActions(self, self.target, self.act)

    # -- layout ------------------------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield self.loader
        yield self.watcher
        yield Header()
        yield FilterBar(id="filter-bar")
        with Horizontal(id="main"):
            yield BoardColumns(id="columns")
            yield DetailPane(id="detail")
        yield self.STATUS_LINE(id="status")
        yield Footer()

    @property
    def columns(self) -> BoardColumns:
        return self.query_one(BoardColumns)

    def column(self, status: str) -> TaskColumn:
        return self.columns.column(status)

    def on_mount(self) -> None:
        self.column("ready").focus()
        self.open_board()
        self.set_interval(STATUS_EVERY_S, self.poll_status)

    def on_unmount(self) -> None:
        self.stop_watching()

    # -- keys --------------------------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Where each board key applies (see BINDINGS); anywhere else the key goes to the focused widget."""
        if action not in self.COLUMN_ACTIONS | self.FILTER_ACTIONS | self.BOARD_ACTIONS:
            return True
        if self.app.screen is not self:
            return False
        focused = self.focused
        if action in self.COLUMN_ACTIONS:
            return isinstance(focused, TaskColumn)
        if action in self.FILTER_ACTIONS:
            return focused is not None and focused.id == "filter"
        return action == "back" or not isinstance(focused, Input)

    def focus_now(self, widget: Widget) -> None:
        """Move the focus before the next key is read (Widget.focus() only schedules it)."""
        self.set_focus(widget)

    # -- opening a board ---------------------------------------------------------------------------------------------
    def open_board(self) -> None:
        self.stop_watching()
        self.board_gen += 1
        self.view_gen += 1
        self.board_ready = False
        self.selected = None
        self.columns.reset(self.view_gen)
        self.query_one(StatusLine).show_board(self.ref.label)
        self.app.sub_title = clean(self.ref.label)
        self.loader.load_board(self.ref, self.board_gen, self.view_gen, self.flt, self.subscription_override)

    @on(BoardLoader.BoardOpened)
    def _board_opened(self, msg: BoardLoader.BoardOpened) -> None:
        if not self.app.is_running or msg.board_gen != self.board_gen:
            return  # shutting down (widgets are being removed), or about a board no longer shown
        self.board_ready = True
        self._apply_counts(msg.counts, msg.view_gen)
        self.columns.set_first_pages(msg.pages, msg.view_gen)
        status = self.query_one(StatusLine)
        status.board = msg.slug
        status.last_event = msg.last_event_id
        self.watcher.handled_upto = msg.last_event_id
        if msg.missed:
            self.toaster.missed(msg.missed, msg.missed_recent, msg.titles)
        focused = self.focused if isinstance(self.focused, TaskColumn) else None
        if focused is None or focused.count == 0:
            (self.columns.first_with_cards() or self.column("ready")).focus()
        self.watcher.start(self.ref, msg.board_gen, msg.subscription, msg.last_event_id)
        self.status_polls = 0
        self.poll_status()

    def stop_watching(self) -> None:
        self.watcher.stop()

    @on(DoorbellWatcher.BoardChanged)
    def _board_changed(self, msg: DoorbellWatcher.BoardChanged) -> None:
        if not self.app.is_running or msg.board_gen != self.board_gen:
            return  # shutting down (widgets are being removed), or about a board no longer shown
        self.toaster.show([e for e in msg.events if e.kind in TOAST_KINDS], msg.titles)
        self.watcher.handled_upto = max(self.watcher.handled_upto, msg.cursor)
        self.query_one(StatusLine).last_event = msg.events[-1].id
        self.request_refresh()
        pane = self.query_one(DetailPane)
        if pane.is_open and pane.task_id in {e.task_id for e in msg.events}:
            self.loader.load_detail(self.ref, pane.task_id, self.board_gen)
        if any(e.kind.startswith("dispatch") for e in msg.events):
            self.poll_status()

    # -- counts and pages --------------------------------------------------------------------------------------------
    def request_refresh(self) -> None:
        """Reload counts and visible pages soon (the loader coalesces bursts)."""
        if self.board_ready:
            self.loader.request_refresh(self._start_refresh)

    def _start_refresh(self) -> None:
        self.loader.refresh_view(self.ref, self.board_gen, self.view_gen, self.flt, self.columns.wanted_pages())

    @on(BoardLoader.Refreshed)
    def _refreshed(self, msg: BoardLoader.Refreshed) -> None:
        if not self.app.is_running:
            return  # shutting down: widgets are being removed
        if msg.counts is not None and msg.view_gen == self.view_gen:
            self._apply_counts(msg.counts, msg.view_gen)
            for status, pages in msg.pages.items():
                self.column(status).replace_pages(pages, msg.view_gen)
        if self.loader.refresh_done():
            self.request_refresh()

    def _apply_counts(self, counts: dict[str, int], view_gen: int) -> None:
        if view_gen != self.view_gen:
            return
        self.columns.set_counts(counts)
        self.query_one(StatusLine).total = sum(n for s, n in counts.items() if s != TaskStatus.ARCHIVED)

    @on(TaskColumn.PageWanted)
    def _page_wanted(self, msg: TaskColumn.PageWanted) -> None:
        if self.app.is_running and self.board_ready and msg.generation == self.view_gen:  # not while shutting down
            self.loader.load_page(self.ref, self.board_gen, self.view_gen, self.flt, msg.column.status, msg.page)

    @on(BoardLoader.PageLoaded)
    def _page_loaded(self, msg: BoardLoader.PageLoaded) -> None:
        if self.app.is_running and msg.view_gen == self.view_gen:  # not while shutting down, nor a stale page
            self.column(msg.status).set_page(msg.page, msg.tasks, msg.view_gen)

    # -- selection and the detail pane -------------------------------------------------------------------------------
    @on(TaskColumn.Highlighted)
    def _highlighted(self, msg: TaskColumn.Highlighted) -> None:
        if not self.app.is_running:
            return  # shutting down: widgets are being removed
        self.selected = msg.task
        pane = self.query_one(DetailPane)
        if msg.task is not None and pane.is_open and pane.task_id != msg.task.id:
            self.loader.load_detail(self.ref, msg.task.id, self.board_gen)

    @on(TaskColumn.Selected)
    def _selected(self, msg: TaskColumn.Selected) -> None:
        if not self.app.is_running:
            return  # shutting down: widgets are being removed
        self.query_one(DetailPane).open_loading(msg.task.id)
        self.loader.load_detail(self.ref, msg.task.id, self.board_gen)

    @on(BoardLoader.DetailLoaded)
    def _detail_loaded(self, msg: BoardLoader.DetailLoaded) -> None:
        if self.app.is_running and msg.board_gen == self.board_gen:  # not while shutting down, nor another board's
            self.query_one(DetailPane).show(msg.detail, msg.log, msg.log_name)

    # -- navigation --------------------------------------------------------------------------------------------------
    def action_focus_column(self, delta: int) -> None:
        current = self.focused if isinstance(self.focused, TaskColumn) else None
        self.focus_now(self.columns.next_to(current, delta))

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if self.focused is box:  # not box.has_focus: that follows the focus only once the box has been told
            # Keys typed before this escape may still be on their way to the box: clear it once they are in
            # (FilterBar.keyed), and hand the focus back to the columns now, for the keys that follow.
            self.focus_now(self.column("ready"))
            self.query_one(FilterBar).keyed(clear=True)
        elif not self.query_one(DetailPane).close() and self.flt.active:
            box.value = ""
            self.apply_filter("")
            self.hide_filter()

    def action_toggle_archived(self) -> None:
        self.show_archived = not self.show_archived

    def watch_show_archived(self, show: bool) -> None:
        self.columns.show_archived = show
        if show:
            self.request_refresh()
        elif self.focused is self.column("archived"):
            self.focus_now(self.column("done"))

    def action_reload(self) -> None:
        self.open_board()

    # -- filter ------------------------------------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one("#filter-bar").add_class("-visible")
        self.focus_now(self.query_one("#filter", Input))

    def hide_filter(self) -> None:
        if not self.flt.active:
            self.query_one("#filter-bar").remove_class("-visible")
        if not isinstance(self.focused, TaskColumn):
            self.focus_now(self.column("ready"))

    def action_submit_filter(self) -> None:
        """Enter in the filter box: the columns get the focus now; the filter is applied once the box has the keys
        typed before the enter."""
        self.focus_now(self.columns.first_with_cards() or self.columns.shown()[0])
        self.query_one(FilterBar).keyed(clear=False)

    @on(FilterBar.Applied)
    def _filter_applied(self, msg: FilterBar.Applied) -> None:
        self.apply_filter(msg.text)
        if msg.closed:
            self.hide_filter()

    def apply_filter(self, text: str) -> None:
        flt = view.Filter.parse(text)
        if flt == self.flt:
            return
        self.flt = flt
        self.view_gen += 1
        self.columns.reset(self.view_gen)
        self.query_one(StatusLine).filter_text = str(flt)
        self.loader.refresh_running = False  # results of an in-flight refresh are for the old filter: ignored
        self.request_refresh()

    # -- actions (the dialogs are TaskActions'; the store call runs in the loader) ----------------------------------
    def target(self) -> Task | None:
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
        else:
            self.actions.create()

    def action_act_on(self, verb: str) -> None:
        """An action on the card under the cursor: `verb` names the TaskActions flow (complete, block...)."""
        flows = {"complete": self.actions.complete, "block": self.actions.block, "unblock": self.actions.unblock,
                 "approve": self.actions.approve, "archive": self.actions.archive, "comment": self.actions.comment}
        flows[verb]()

    def act(self, verb: str, task_id: str | None, **kwargs: Any) -> None:
        self.loader.perform(self.ref, self.board_gen, verb, task_id, kwargs)

    @on(BoardLoader.ActionDone)
    def _action_done(self, msg: BoardLoader.ActionDone) -> None:
        if self.app.is_running:  # not while shutting down: widgets are being removed
            self.actions.announce(msg)

    # -- boards ------------------------------------------------------------------------------------------------------
    def action_switch_board(self) -> None:
        self.loader.list_boards(self.board_gen)

    @on(BoardLoader.BoardsListed)
    def _boards_listed(self, msg: BoardLoader.BoardsListed) -> None:
        if self.app.is_running:  # not while shutting down: widgets are being removed
            self.actions.choose_board(msg.slugs, self.ref.label, self.switch_board)

    def switch_board(self, slug: str) -> None:
        """Show board `slug` (the switcher's choice); the board shown already is reopened only if it is not open."""
        if slug != self.ref.label or not self.board_ready:
            self.ref = BoardRef(slug)
            self.query_one(DetailPane).close()
            self.open_board()

    # -- status line -------------------------------------------------------------------------------------------------
    def poll_status(self) -> None:
        if self.board_ready:
            with_health = self.status_polls % HEALTH_EVERY == 0
            self.status_polls += 1
            self.loader.load_status(self.ref, self.board_gen, with_health)

    @on(BoardLoader.StatusLoaded)
    def _status_loaded(self, msg: BoardLoader.StatusLoaded) -> None:
        if self.app.is_running and msg.board_gen == self.board_gen:  # not while shutting down, nor another board's
            self.query_one(StatusLine).show_lease(msg.dispatcher, msg.health)
