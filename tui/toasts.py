"""Toasts for board events: one per event, at most TOAST_BURST per TOAST_WINDOW_S, the rest summed up in one."""

from __future__ import annotations

import time
from collections import deque

from textual.timer import Timer
from textual.widget import Widget

from hermes_cli.kanban.core.models import Event
from hermes_cli.kanban.live.readers import TOAST_KINDS

from .format import TOAST_BURST, burst_summary, toast

#: at most TOAST_BURST toasts per this many seconds; more are summed up in one toast
TOAST_WINDOW_S = 2.0


class Toaster:
    """Shows event toasts through `node` (its notify and timers)."""

    def __init__(self, node: Widget) -> None:
        self.node = node
        self._times: deque[float] = deque()
        self._backlog: list[Event] = []
        self._backlog_timer: Timer | None = None

    def show(self, events: list[Event], titles: dict[str, str]) -> None:
        """One toast per event, at most TOAST_BURST per TOAST_WINDOW_S; the rest become one summary toast."""
        now = time.monotonic()
        while self._times and now - self._times[0] > TOAST_WINDOW_S:
            self._times.popleft()
        for ev in events:
            if len(self._times) < TOAST_BURST and not self._backlog:
                head, body, severity = toast(ev, titles.get(ev.task_id or ""))
                self.node.notify(body, title=head, severity=severity, markup=False)  # type: ignore[arg-type]
                self._times.append(now)
            else:
                self._backlog.append(ev)
        if self._backlog and self._backlog_timer is None:
            self._backlog_timer = self.node.set_timer(TOAST_WINDOW_S, self._flush_backlog)

    def _flush_backlog(self) -> None:
        self._backlog_timer = None
        rest, self._backlog = self._backlog, []
        if rest:
            self.node.notify(burst_summary(rest), title=f"…and {len(rest)} more", markup=False)
            self._times.append(time.monotonic())

    def missed(self, missed: dict[str, int], recent: list[Event], titles: dict[str, str]) -> None:
        """What happened while the TUI was away: one summary toast, then the newest few events."""
        total = sum(missed.values())
        order = {k: i for i, k in enumerate(TOAST_KINDS)}
        counts = ", ".join(f"{n} {k.replace('_', ' ')}"
                           for k, n in sorted(missed.items(), key=lambda kv: (-kv[1], order.get(kv[0], 99))))
        self.node.notify(counts, title=f"While you were away ({total})", markup=False, timeout=10)
        for ev in recent[-TOAST_BURST:]:
            head, body, severity = toast(ev, titles.get(ev.task_id or ""))
            self.node.notify(body, title=head, severity=severity, markup=False)  # type: ignore[arg-type]
