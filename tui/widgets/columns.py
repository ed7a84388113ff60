"""The row of status columns: which are shown, their counts and pages, and moving between them."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive

from hermes_cli.kanban.core.models import STATUS_ORDER, Task, TaskStatus

from .column import TaskColumn


class BoardColumns(Horizontal):
    #: whether the archived column is shown
    show_archived: reactive[bool] = reactive(False)

    def compose(self) -> ComposeResult:
        for status in STATUS_ORDER:
            yield TaskColumn(str(status))

    @property
    def all(self) -> list[TaskColumn]:
        return list(self.query(TaskColumn))

    def shown(self) -> list[TaskColumn]:
        return [c for c in self.all if (c.status != TaskStatus.ARCHIVED or self.show_archived)
                and (c.status != TaskStatus.TRIAGE or c.count)]

    def column(self, status: str) -> TaskColumn:
        return self.query_one(f"#col-{status}", TaskColumn)

    def watch_show_archived(self, show: bool) -> None:
        self.column("archived").set_class(not show, "-hidden")

    def reset(self, generation: int) -> None:
        """Every column forgets its pages; only pages of `generation` are accepted now."""
        for col in self.all:
            col.reset(generation)

    def set_counts(self, counts: dict[str, int]) -> None:
        for col in self.all:
            col.count = counts.get(col.status, 0)

    def set_first_pages(self, pages: dict[str, list[Task]], generation: int) -> None:
        for col in self.all:
            col.set_page(0, pages.get(col.status, []), generation)

    def wanted_pages(self) -> dict[str, list[int]]:
        """The pages a refresh should reload: those on screen in the shown columns."""
        return {c.status: c.visible_pages() for c in self.shown()}

    def next_to(self, current: TaskColumn | None, delta: int) -> TaskColumn:
        """The shown column `delta` columns from `current` (wrapping around; the first when there is none)."""
        cols = self.shown()
        index = cols.index(current) if current in cols else 0
        return cols[(index + delta) % len(cols)]

    def first_with_cards(self) -> TaskColumn | None:
        return next((c for c in self.shown() if c.count), None)
