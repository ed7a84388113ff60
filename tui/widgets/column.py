"""One status column: a virtualised list of task cards over paged queries.

The column never holds the whole status: it knows its `count` (set by the app) and keeps the pages the app has
handed it. Rendering a line of an unloaded page draws a placeholder and asks for the page (`PageWanted`); the app
loads it in a thread worker and hands it back with `set_page`. Attributes come down, messages go up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from hermes_cli.kanban.core.models import Task
from hermes_cli.kanban.views.snapshot import PAGE

from ..format import card_meta, clean

#: lines per card: title, id, meta (priority, age, attempts, tenant), gap
CARD_HEIGHT = 4
#: rendered lines kept for repaints (a line is keyed by its text, style and width, so it is never stale)
STRIP_CACHE = 4096


class TaskColumn(ScrollView, can_focus=True):
    """The tasks of one status, as cards, with a cursor."""

    # Priority bindings, like the app's board keys: handled in the order keys are read, so `right down` in one read
    # moves the cursor of the column that `right` focused (see KanbanApp.BINDINGS).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False, priority=True),
        Binding("down,j", "cursor(1)", "Down", show=False, priority=True),
        Binding("pageup", "page(-1)", "Page up", show=False, priority=True),
        Binding("pagedown", "page(1)", "Page down", show=False, priority=True),
        Binding("home,g", "jump(0)", "First", show=False, priority=True),
        Binding("end,G", "jump(-1)", "Last", show=False, priority=True),
        Binding("enter", "select", "Details", priority=True),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "task-column--title",
        "task-column--id",
        "task-column--meta",
        "task-column--cursor",
        "task-column--cursor-blurred",
        "task-column--loading",
    }

    @dataclass
    class PageWanted(Message):
        """The column needs page `page` of its status (in its current `generation`)."""

        column: TaskColumn
        page: int
        generation: int

        @property
        def control(self) -> TaskColumn:
            return self.column

    @dataclass
    class Highlighted(Message):
        """The task under the cursor changed (None: the column is empty or the card not loaded yet)."""

        column: TaskColumn
        task: Task | None

        @property
        def control(self) -> TaskColumn:
            return self.column

    @dataclass
    class Selected(Message):
        """Enter was pressed on a card."""

        column: TaskColumn
        task: Task

        @property
        def control(self) -> TaskColumn:
            return self.column

    #: tasks in this status (under the app's filter)
    count: reactive[int] = reactive(0, always_update=True)
    #: index of the card under the cursor
    cursor: reactive[int] = reactive(0)

    def __init__(self, status: str, *, page_size: int = PAGE, id: str | None = None) -> None:
        super().__init__(id=id or f"col-{status}", classes=f"-status-{status}")
        self.status = status
        self.page_size = page_size
        #: set by `reset()`; pages of other generations are ignored
        self.generation = 0
        self._pages: dict[int, list[Task]] = {}
        self._requested: set[int] = set()
        self._highlighted: str | None = None
        self._base_style: Style | None = None
        self._strips: dict[tuple[object, ...], Strip] = {}
        self.border_title = status

    # -- attributes set by the app ---------------------------------------------------------------------------------
    def reset(self, generation: int) -> None:
        """Forget every page (the filter or the board changed); only pages of `generation` are accepted now."""
        self.generation = generation
        self._pages.clear()
        self._requested.clear()
        self.cursor = 0
        self.scroll_to(y=0, animate=False, immediate=True)
        self.refresh()

    def set_page(self, page: int, tasks: list[Task], generation: int) -> None:
        if generation != self.generation:
            return
        self._pages[page] = tasks
        self._requested.discard(page)
        self.refresh()
        self._post_highlight()

    def replace_pages(self, pages: dict[int, list[Task]], generation: int) -> None:
        """A consistent refresh of the visible pages: every other page is dropped (it may be stale now)."""
        if generation != self.generation:
            return
        if all(self._pages.get(p) == rows for p, rows in pages.items()) and len(pages) == len(self._pages):
            return  # nothing moved: no repaint
        before = self.highlighted_task
        self._pages = dict(pages)
        self._requested.difference_update(pages)
        if before is not None:
            # Keep the cursor on the same task when others move around it, so a key pressed a moment after a
            # refresh acts on the card the person was looking at. A task that left the column leaves the cursor
            # where it was (the next card slides under it, visibly).
            for page, rows in self._pages.items():
                for offset, task in enumerate(rows):
                    if task.id == before.id:
                        self.cursor = page * self.page_size + offset
                        break
        self.refresh()
        self._post_highlight()

    def visible_pages(self) -> list[int]:
        """Pages covering the viewport and the cursor (what a refresh should reload)."""
        if self.count == 0:
            return [0]
        first = int(self.scroll_offset.y) // CARD_HEIGHT
        last = (int(self.scroll_offset.y) + max(1, self.size.height)) // CARD_HEIGHT
        last = min(last, self.count - 1)
        pages = set(range(first // self.page_size, last // self.page_size + 1))
        pages.add(self.cursor // self.page_size)
        return sorted(pages)

    @property
    def highlighted_task(self) -> Task | None:
        return self.task_at(self.cursor)

    def task_at(self, index: int) -> Task | None:
        if not 0 <= index < self.count:
            return None
        rows = self._pages.get(index // self.page_size)
        if rows is None:
            return None
        offset = index % self.page_size
        return rows[offset] if offset < len(rows) else None

    # -- reactives ---------------------------------------------------------------------------------------------------
    def watch_count(self, count: int) -> None:
        size = Size(0, count * CARD_HEIGHT)
        if size != self.virtual_size:
            if not self.container_size:
                self.virtual_size = size  # not laid out yet: the first layout sizes the scrollbar
            else:
                # A column's own size never depends on how many cards it has (it is 1fr wide, full height), so a
                # new count needs no layout of the whole screen (a full repaint, ~50 ms at 200x60): set the virtual
                # size without the layout its reactive asks for, and update the scrollbar in place. Showing or
                # hiding the scrollbar still takes one layout, as it changes the content width.
                self.set_reactive(TaskColumn.virtual_size, size)
                shows_bar = self._shows_bar(size)
                if shows_bar != self.show_vertical_scrollbar:
                    # both at once, as Textual's own scrollbar refresh does: one layout, not one for each
                    self.show_vertical_scrollbar = shows_bar
                    self.vertical_scrollbar.display = shows_bar
                elif shows_bar:
                    bar = self.vertical_scrollbar
                    bar.window_virtual_size = size.height
                    bar.window_size = self.container_size.height - self.scrollbar_size_horizontal
                if self.scroll_y > self.max_scroll_y:
                    self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        self.border_subtitle = f"{count:,}"
        if self.status == "triage":
            self.set_class(count == 0, "-hidden")  # most boards never park a task in triage: no empty column
        if self.cursor >= count:
            self.cursor = max(0, count - 1)
        self.refresh()
        self._post_highlight()

    def _shows_bar(self, size: Size) -> bool:
        """Whether a virtual size of `size` shows the vertical scrollbar (overflow-y auto: when it does not fit)."""
        overflow = self.styles.overflow_y
        return overflow == "scroll" or (overflow == "auto" and size.height > self.container_size.height)

    def watch_cursor(self, old: int, new: int) -> None:
        self._scroll_cursor_into_view()
        self.refresh()
        self._post_highlight()

    def watch_has_focus(self, focused: bool) -> None:
        super().watch_has_focus(focused)
        self.refresh()
        if focused:
            # Always announce on focus, even "nothing" (an empty column): the app must never act on a card of the
            # column that had the focus before.
            self._post_highlight(force=True)

    def _post_highlight(self, *, force: bool = False) -> None:
        if not self.has_focus:
            return
        task = self.highlighted_task
        key = None if task is None else f"{task.id}:{task.updated_at}"
        if force or key != self._highlighted:
            self._highlighted = key
            self.post_message(self.Highlighted(self, task))

    def _scroll_cursor_into_view(self) -> None:
        top = self.cursor * CARD_HEIGHT
        height = max(CARD_HEIGHT, self.size.height)
        if top < self.scroll_offset.y:
            self.scroll_to(y=top, animate=False, immediate=True)
        elif top + CARD_HEIGHT > self.scroll_offset.y + height:
            self.scroll_to(y=top + CARD_HEIGHT - height, animate=False, immediate=True)

    # -- actions -----------------------------------------------------------------------------------------------------
    def action_cursor(self, delta: int) -> None:
        if self.count:
            self.cursor = min(self.count - 1, max(0, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        per_screen = max(1, self.size.height // CARD_HEIGHT)
        self.action_cursor(direction * per_screen)

    def action_jump(self, where: int) -> None:
        if self.count:
            self.cursor = self.count - 1 if where < 0 else 0

    def action_select(self) -> None:
        task = self.highlighted_task
        if task is not None:
            self.post_message(self.Selected(self, task))

    # -- rendering ---------------------------------------------------------------------------------------------------
    def render_lines(self, crop: Region) -> list[Strip]:
        # The widget's base style walks the DOM; compute it once per paint, not once per line.
        self._base_style = self.rich_style
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        row = int(self.scroll_offset.y) + y
        index, part = divmod(row, CARD_HEIGHT)
        base = self._base_style or self.rich_style
        if index >= self.count or part == CARD_HEIGHT - 1:
            return Strip.blank(width, base)
        page = index // self.page_size
        task = self.task_at(index)
        if task is None:
            if page not in self._pages and page not in self._requested:
                self._requested.add(page)
                # Not posted from here: during rendering the screen is the active message pump, so a message
                # posted now would stop bubbling at the screen and never reach the app.
                self.call_later(self._want_page, page, self.generation)
            style = self.get_component_rich_style("task-column--loading")
            return self._strip(Text(" …" if part == 0 else "", style=style), width, base)
        if part == 0:
            content, component = clean(task.title), "task-column--title"
        elif part == 1:
            content, component = task.id, "task-column--id"
        else:
            content, component = card_meta(task), "task-column--meta"
        if index != self.cursor:
            cursor = ""
        else:
            cursor = "task-column--cursor" if self.has_focus else "task-column--cursor-blurred"
        key = (content, component, cursor, width, base)
        strip = self._strips.get(key)
        if strip is None:
            text = Text(" " + content, style=self.get_component_rich_style(component))
            fill = base
            if cursor:
                highlight = self.get_component_rich_style(cursor)
                text.stylize(highlight)
                fill = base + highlight
            strip = self._strip(text, width, fill)
            if len(self._strips) > STRIP_CACHE:
                self._strips.clear()
            self._strips[key] = strip
        return strip

    def _want_page(self, page: int, generation: int) -> None:
        if generation == self.generation and page not in self._pages:
            self.post_message(self.PageWanted(self, page, generation))

    def _strip(self, text: Text, width: int, fill: Style) -> Strip:
        text.truncate(width, overflow="ellipsis")
        segments = [Segment(s.text, fill + s.style if s.style else fill) for s in text.render(self.app.console)]
        return Strip(segments).adjust_cell_length(width, fill)
