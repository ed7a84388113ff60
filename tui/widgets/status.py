"""The status line: board, totals, dispatcher lease holder, health, newest event and the active filter."""

from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from hermes_cli.kanban.views.snapshot import DispatcherInfo, HealthInfo

from ..format import clean

#: a dispatcher lease not refreshed for this long is shown as stale
STALE_LEASE_S = 60.0


class StatusLine(Static):
    """One line at the bottom. The app sets the attributes; the line renders them."""

    board: reactive[str] = reactive("")
    total: reactive[int] = reactive(0)
    dispatcher: reactive[DispatcherInfo | None] = reactive(None)
    dispatcher_known: reactive[bool] = reactive(False)
    health: reactive[HealthInfo | None] = reactive(None)
    last_event: reactive[int] = reactive(0)
    filter_text: reactive[str] = reactive("")

    def show_board(self, board: str) -> None:
        """Another board (or the same one again): its lease and health are not known yet."""
        self.board = board
        self.dispatcher_known = False
        self.health = None

    def show_lease(self, dispatcher: DispatcherInfo | None, health: HealthInfo | None) -> None:
        """The dispatcher lease as just read, and the health when this poll checked it (None: keep the last)."""
        self.dispatcher = dispatcher
        self.dispatcher_known = True
        if health is not None:
            self.health = health

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append(f" {clean(self.board)} ", style="bold reverse")  # a pinned db path can hold anything
        out.append(f"  {self.total:,} tasks")
        out.append("  ·  dispatcher: ")
        d = self.dispatcher
        if not self.dispatcher_known:
            out.append("…", style="dim")
        elif d is None:
            out.append("none", style="yellow")
        else:
            lag = d.age(time.time())
            style = "green" if lag < STALE_LEASE_S else "red"
            if d.fleet:  # a PostgreSQL board's fleet: the dispatcher heard from last, and how many there are
                more = f" +{d.fleet - 1} more" if d.fleet > 1 else ""
                out.append(f"{clean(d.holder)}{more} ({int(lag)}s ago)", style=style)
            else:
                out.append(f"{clean(d.holder)} epoch {d.epoch} ({int(lag)}s ago)", style=style)
        out.append("  ·  health: ")
        h = self.health
        if h is None:
            out.append("…", style="dim")
        else:
            # doctor's own verdict and worst finding (view.health runs doctor), never a verdict of the TUI's own
            style = {"ok": "green", "info": "green", "warn": "yellow"}.get(h.status, "bold red")
            out.append(h.verdict or h.status, style=style)
            if h.detail and h.status not in ("ok", "info"):
                out.append(f" ({clean(h.detail)})", style="dim")
        out.append(f"  ·  event #{self.last_event}", style="dim")
        if self.filter_text:
            out.append(f"  ·  filter: {clean(self.filter_text)}", style="bold yellow")
        return out
