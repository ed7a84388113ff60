"""The filter bar: a text field the board screen shows on `/`. Typing applies after a pause; enter keeps the text,
escape clears it. Either way the bar posts `Applied` with the text to filter by; the screen applies it."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Label

from .field import TextField

#: typing in the filter box applies after this pause
FILTER_DEBOUNCE_S = 0.25


class FilterBar(Horizontal):
    @dataclass
    class Applied(Message):
        """Filter by `text` now; `closed`: the person cleared the filter with escape (hide the bar)."""

        text: str
        closed: bool

    @dataclass
    class Keyed(Message):
        """Posted to the box by `keyed`: it reaches the bar once the box has taken the keys typed before it."""

        clear: bool

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Label("filter ", id="filter-label")
        yield TextField(placeholder="title text, id prefix, tenant:NAME — enter to keep, escape to clear",
                        id="filter")

    @property
    def box(self) -> Input:
        return self.query_one("#filter", Input)

    def keyed(self, *, clear: bool) -> None:
        """Enter (`clear` False) or escape (`clear` True) in the box: apply the text once the keys typed before it
        are in the box, so the filter applied is the text as typed."""
        self.box.post_message(self.Keyed(clear))

    @on(Input.Changed, "#filter")
    def _changed(self, event: Input.Changed) -> None:
        if self._timer is not None:
            self._timer.stop()
        box = event.input
        # the box's text when the timer fires, not this event's: a Changed that arrives after escape cleared the
        # box (its keys were typed before the escape) must not bring the old text back
        self._timer = self.set_timer(FILTER_DEBOUNCE_S, lambda: self.post_message(self.Applied(box.value, False)))

    @on(Keyed)
    def _keyed(self, msg: Keyed) -> None:
        msg.stop()
        if not self.app.is_running:
            return  # shutting down: widgets are being removed
        if self._timer is not None:
            self._timer.stop()
        if msg.clear:
            self.box.value = ""
        self.post_message(self.Applied(self.box.value, msg.clear))
