"""The detail pane: one task's body, parents/children, runs with outcomes, log tail, events and comments."""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from hermes_cli.kanban.core.models import Run, TaskDetail, iso

from ..format import age, clean

OUTCOME_STYLE = {
    "completed": "green", "review_requested": "cyan", "blocked": "yellow", "crashed": "red", "timed_out": "red",
    "reclaimed": "magenta", "gave_up": "red",
}


class DetailPane(VerticalScroll, can_focus=True):
    """Shows whatever `show()` is handed; loading is the app's job (in a thread worker)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._task_id: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("no task selected", style="dim"), id="detail-body")

    @property
    def task_id(self) -> str | None:
        return self._task_id

    @property
    def is_open(self) -> bool:
        return self.has_class("-open")

    def open_loading(self, task_id: str) -> None:
        """Open the pane on `task_id`, saying it is loading until `show()` gets its detail."""
        self.add_class("-open")
        self.show_message(f"loading {task_id}…")

    def close(self) -> bool:
        """Close the pane; whether it was open."""
        was_open = self.is_open
        self.remove_class("-open")
        return was_open

    def show(self, detail: TaskDetail, log: list[str], log_name: str) -> None:
        self._task_id = detail.task.id
        self.border_title = f"{detail.task.id} · {detail.task.status}"
        self.query_one("#detail-body", Static).update(render_detail(detail, log, log_name))

    def show_message(self, message: str) -> None:
        self.query_one("#detail-body", Static).update(Text(message, style="dim"))


def _section(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def _run_row(run: Run, now: float) -> tuple[str, Text, str, str, str]:
    outcome = str(run.outcome) if run.outcome else "open"
    end = run.ended_at or now
    took = f"{end - run.started_at:.1f}s"
    exit_code = "" if run.exit_code is None else str(run.exit_code)
    return (f"#{run.id}", Text(outcome, style=OUTCOME_STYLE.get(outcome, "bold")), took, exit_code,
            clean(run.summary or run.worker or ""))


def render_detail(detail: TaskDetail, log: list[str], log_name: str) -> RenderableType:
    t = detail.task
    now = time.time()
    parts: list[RenderableType] = [
        Text(clean(t.title), style="bold"),
        Text(f"{t.id}  {t.status}  p{t.priority}  attempts {t.attempts}/{t.max_retries + 1}"
             + (f"  @{clean(t.tenant)}" if t.tenant else "") + ("  review-gated" if t.review_required else ""),
             style="dim"),
        Text(f"created {age(t.created_at, now)} ago · updated {age(t.updated_at, now)} ago", style="dim"),
    ]
    if t.summary:
        parts.append(Text(f"summary: {clean(t.summary)}"))
    parts += [_section("Body"), Text(clean(t.body) or "(empty)", style="" if t.body else "dim")]
    if detail.parents or detail.children:
        parts.append(_section("Depends on / blocks"))
        for label, tasks in (("parent", detail.parents), ("child", detail.children)):
            for other in tasks:
                parts.append(Text(f"{label:<6} {other.id}  {other.status:<8} {clean(other.title)}"))
    parts.append(_section(f"Runs ({len(detail.runs)})"))
    if detail.runs:
        table = Table(box=None, show_header=True, header_style="dim", pad_edge=False, expand=True)
        for col in ("run", "outcome", "took", "exit", "summary"):
            table.add_column(col, overflow="ellipsis", no_wrap=True, ratio=3 if col == "summary" else None)
        for run in detail.runs[-10:]:
            table.add_row(*_run_row(run, now))
        parts.append(table)
    else:
        parts.append(Text("no runs yet", style="dim"))
    parts.append(_section(f"Log tail ({log_name})"))
    parts.append(Text("\n".join(log)) if log else Text("no log", style="dim"))
    parts.append(_section(f"Events (last {len(detail.events)})"))
    for ev in detail.events:
        brief = " ".join(f"{k}={v}" for k, v in ev.payload.items() if v not in (None, [], "") and k != "title")
        parts.append(Text(f"#{ev.id} {(iso(ev.created_at) or '')[11:19]} {clean(ev.kind):<15} {clean(brief)}",
                          no_wrap=True, overflow="ellipsis"))
    if detail.comments:
        parts.append(_section(f"Comments ({len(detail.comments)})"))
        for c in detail.comments[-10:]:
            parts.append(Text(f"{clean(c.author or 'anon')} · {age(c.created_at, now)} ago: {clean(c.body)}"))
    return Group(*parts)
