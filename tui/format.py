"""Plain-text formatting shared by the widgets (no Textual imports, so it is cheap to test)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hermes_cli.kanban.core.models import Event, Task
from hermes_cli.kanban.core.textsafe import terminal_safe

#: how each toast-worthy event kind is shown: (icon, severity)
TOASTS: dict[str, tuple[str, str]] = {
    "completed": ("✔", "information"),
    "blocked": ("⏸", "warning"),
    "gave_up": ("✖", "error"),
    "crashed": ("✖", "error"),
    "timed_out": ("⏱", "warning"),
}
#: at most this many toasts in a short window (the app's TOAST_WINDOW_S); more are summed up in one toast
TOAST_BURST = 4


def clean(text: object) -> str:
    """Text from the board, safe to put on a terminal: every control character but newline shown as a visible
    escape (textsafe), tabs as spaces. Widgets put it in rich `Text` (never markup), so `[bold]` stays literal."""
    return terminal_safe(text).replace("\t", "    ")


def age(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    s = max(0.0, (now or time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def card_meta(task: Task, now: float | None = None) -> str:
    """The meta line of a card: priority, age, attempts, tenant (`p5 · 3m · ×2 · @ops`)."""
    parts = [f"p{task.priority}", age(task.created_at, now)]
    if task.attempts:
        parts.append(f"×{task.attempts}")
    if task.tenant:
        parts.append(f"@{clean(task.tenant)}")
    return " · ".join(parts)


def event_summary(event: Event) -> str:
    """One line saying what an event's payload adds (summary, reason, exit code...)."""
    p: dict[str, Any] = event.payload
    if event.kind == "completed":
        return clean(str(p.get("summary") or ("approved" if p.get("approved") else "")))
    if event.kind == "blocked":
        return clean(str(p.get("reason") or "blocked, no reason given"))
    if event.kind == "gave_up":
        last = p.get("last_outcome")
        return f"gave up after {p.get('attempts', '?')} attempts" + (f" (last: {last})" if last else "")
    if event.kind in ("crashed", "timed_out"):
        bits = [clean(str(p["summary"]))] if p.get("summary") else []
        if p.get("exit_code") is not None:
            bits.append(f"exit {p['exit_code']}")
        if p.get("will_retry"):
            bits.append(f"retry in {p.get('retry_in_s', '?')}s")
        elif p.get("will_retry") is False:
            bits.append("no retries left")
        return ", ".join(bits)
    return clean(" ".join(f"{k}={v}" for k, v in p.items() if v not in (None, [], "")))


def toast(event: Event, title: str | None) -> tuple[str, str, str]:
    """(toast title, message, severity) for a toast-worthy event."""
    icon, severity = TOASTS.get(event.kind, ("•", "information"))
    head = clean(f"{icon} {event.kind.replace('_', ' ')} · {event.task_id or '-'}")
    body = clean(title or str(event.payload.get("title") or "(untitled)"))
    summary = event_summary(event)
    return head, f"{body}\n{summary}" if summary else body, severity


def burst_summary(events: Sequence[Event]) -> str:
    """`3 completed, 1 crashed` for a run of toast-worthy events."""
    counts = Counter(e.kind for e in events)
    return clean(", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.most_common()))
