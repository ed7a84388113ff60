"""Every store call of the board screen, each in a thread worker (CONVENTIONS 10): the event loop never touches
SQLite. A worker opens its own `Board` (APSW connections are per thread here), reads or writes, and posts the result
as a message; the messages bubble up to the board screen (and the failures on to the app). `BoardLoader` shows
nothing: it is mounted only to own these workers and post their messages."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from textual import work
from textual.message import Message
from textual.widget import Widget

from hermes_cli.kanban.core.errors import BoardReadOnly, HermesError
from hermes_cli.kanban.core.models import STATUS_ORDER, Event, Task, TaskDetail
from hermes_cli.kanban.core.paths import list_slugs
from hermes_cli.kanban.live.readers import TOAST_KINDS, missed_summary, subscribe
from hermes_cli.kanban.views import snapshot as view

from .session import BoardRef, subscription_for

#: minimum gap between two refreshes of counts and pages (a burst of events costs one refresh per gap)
REFRESH_GAP_S = 0.1


class BoardLoader(Widget):
    """The board screen's store calls, in thread workers; results and failures go up as messages."""

    DEFAULT_CSS: ClassVar[str] = "BoardLoader { display: none; }"

    # -- messages posted by the thread workers -----------------------------------------------------------------------
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

    def __init__(self) -> None:
        super().__init__()
        #: a refresh is in flight (at most one is; results of one started before a filter change are ignored)
        self.refresh_running = False
        self._refresh_again = False
        self._last_refresh = 0.0

    def request_refresh(self, start: Callable[[], None]) -> None:
        """Call `start` (which starts `refresh_view`) soon: at most one refresh in flight, at most one per
        REFRESH_GAP_S. Asked for while one is in flight, it runs again once that one is done (`refresh_done`)."""
        if self.refresh_running:
            self._refresh_again = True
            return
        self.refresh_running = True

        def go() -> None:
            self._last_refresh = time.monotonic()
            start()

        wait = self._last_refresh + REFRESH_GAP_S - time.monotonic()
        if wait > 0:
            self.set_timer(wait, go)
        else:
            go()

    def refresh_done(self) -> bool:
        """The refresh in flight has been shown; whether another was asked for meanwhile."""
        self.refresh_running = False
        again, self._refresh_again = self._refresh_again, False
        return again

    # -- the workers -------------------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def load_board(self, ref: BoardRef, board_gen: int, view_gen: int, flt: view.Filter,
                   sub_override: str | None) -> None:
        with self.reporting("opening the board", board_gen, opening=True), ref.open() as b:
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

    @work(thread=True, group="refresh", exit_on_error=False)
    def refresh_view(self, ref: BoardRef, board_gen: int, view_gen: int, flt: view.Filter,
                     wanted: dict[str, list[int]]) -> None:
        counts: dict[str, int] | None = None
        pages: dict[str, dict[int, list[Task]]] = {}
        try:
            with self.reporting("refreshing", board_gen), ref.open() as b, b.db.read():
                counts = view.counts(b, flt)
                pages = {s: {p: view.column_page(b, s, p, flt) for p in ps} for s, ps in wanted.items()}
        finally:
            # Always answer, even after a failure: the screen allows one refresh in flight and waits for this.
            self.post_message(self.Refreshed(view_gen, counts, pages))

    @work(thread=True, group="pages", exit_on_error=False)
    def load_page(self, ref: BoardRef, board_gen: int, view_gen: int, flt: view.Filter, status: str,
                  page: int) -> None:
        with self.reporting("loading tasks", board_gen), ref.open() as b:
            self.post_message(self.PageLoaded(view_gen, status, page, view.column_page(b, status, page, flt)))

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def load_detail(self, ref: BoardRef, task_id: str, board_gen: int) -> None:
        with self.reporting(f"loading {task_id}", board_gen), ref.open() as b:
            detail = b.detail(task_id, events=20)
            log = view.log_tail(b, task_id)
            self.post_message(self.DetailLoaded(board_gen, detail, log, f"logs/{task_id}.log"))

    @work(thread=True, exclusive=True, group="status", exit_on_error=False)
    def load_status(self, ref: BoardRef, board_gen: int, with_health: bool) -> None:
        with self.reporting("reading the dispatcher lease", board_gen), ref.open() as b:
            disp = view.dispatcher(b)
            health = view.health(b) if with_health else None
            self.post_message(self.StatusLoaded(board_gen, disp, health))

    @work(thread=True, group="act", exit_on_error=False)
    def perform(self, ref: BoardRef, board_gen: int, verb: str, task_id: str | None,
                kwargs: dict[str, Any]) -> None:
        """Run one Board verb (`complete`, `create_task`...) on the task; post ActionDone with its result."""
        with self.reporting(f"{verb.replace('_task', '')} {task_id or ''}".strip(), board_gen), ref.open() as b:
            fn = getattr(b, verb)
            result = fn(task_id, **kwargs) if task_id is not None else fn(**kwargs)
            self.post_message(self.ActionDone(verb, task_id, result))

    @work(thread=True, exclusive=True, group="boards", exit_on_error=False)
    def list_boards(self, board_gen: int) -> None:
        with self.reporting("listing boards", board_gen):
            self.post_message(self.BoardsListed(list_slugs()))

    @contextmanager
    def reporting(self, what: str, board_gen: int, *, opening: bool = False) -> Iterator[None]:
        """Run a worker's store calls; turn any failure into a message (never a dead thread). Also used by the
        doorbell watcher, whose failures are reported the same way."""
        try:
            yield
        except HermesError as err:
            self.post_message(self.BoardFailed(board_gen, err) if opening else self.StoreFailed(board_gen, what, err))
        except Exception as exc:  # a bug: show it instead of letting the worker die silently
            bug = HermesError(f"internal error while {what}: {exc.__class__.__name__}: {exc}")
            self.post_message(self.BoardFailed(board_gen, bug) if opening else self.StoreFailed(board_gen, what, bug))
