"""The hub view's status line: that it is a read-only view of a hub, which hub (its URL without the password), which
boards, their tasks, the newest event the hub has and the active filter."""

from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive

from hermes_cli.kanban.core.models import iso

from ..format import age, clean
from .status import StatusLine

#: at most this many board labels are listed; more are counted
SHOWN_BOARDS = 4


class HubStatusLine(StatusLine):
    """One line at the bottom of a hub view. The hub screen sets the attributes; the line renders them."""

    hub: reactive[str] = reactive("")
    boards: reactive[tuple[str, ...]] = reactive(())
    last_at: reactive[float | None] = reactive(None)

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append(" read-only hub view ", style="bold reverse")
        out.append(f"  {clean(self.hub) or '…'}")
        shown = ", ".join(clean(b) for b in self.boards[:SHOWN_BOARDS])
        more = f" +{len(self.boards) - SHOWN_BOARDS} more" if len(self.boards) > SHOWN_BOARDS else ""
        if self.boards == (self.board,):
            out.append("  ·  board ")
            out.append(clean(self.board), style="bold")
        else:  # all boards, or a slug several hosts hold
            out.append(f"  ·  {clean(self.board)}: ")
            out.append(f"{shown}{more}" if self.boards else "no boards yet", style="bold" if self.boards else "yellow")
        out.append(f"  ·  {self.total:,} tasks")
        out.append("  ·  last event: ")
        if self.last_at is None:
            out.append("none", style="dim")
        else:
            out.append(f"{iso(self.last_at)} ({age(self.last_at, time.time())} ago)", style="dim")
        if self.filter_text:
            out.append(f"  ·  filter: {clean(self.filter_text)}", style="bold yellow")
        return out
