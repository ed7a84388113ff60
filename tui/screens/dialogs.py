"""Typed modal dialogs: confirm (bool), prompt (str | None), new task (NewTask | None), board switcher (str | None)
and help (None). Each returns its result through `dismiss`; the app decides what to do with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..widgets.field import TextField


class ConfirmScreen(ModalScreen[bool]):
    """Ask before a destructive action. y / enter = yes; n / escape = no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-confirm"):
            yield Label(Text(self.question), id="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line of text (a comment, a block reason). Enter submits, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, *, placeholder: str = "", allow_empty: bool = False) -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder
        self.allow_empty = allow_empty

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.question))
            yield TextField(placeholder=self.placeholder, id="answer")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if value or self.allow_empty:
            self.dismiss(value)
        else:
            self.notify("type something, or press escape to cancel", severity="warning")

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True, slots=True)
class NewTask:
    title: str
    priority: str
    tenant: str | None
    body: str


class CreateTaskScreen(ModalScreen[NewTask | None]):
    """The new-task form. Enter in any field creates; escape cancels. Validation is the board's."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-form"):
            yield Label("New task", classes="dialog-title")
            yield TextField(placeholder="title", id="title")
            yield TextField(placeholder="priority (default 0)", id="priority", restrict=r"-?\d*")
            yield TextField(placeholder="tenant (optional)", id="tenant")
            yield TextField(placeholder="body (optional)", id="body")
            with Horizontal(classes="buttons"):
                yield Button("Create", variant="primary", id="create")
                yield Button("Cancel", id="cancel")

    def _value(self, name: str) -> str:
        return self.query_one(f"#{name}", Input).value.strip()

    def _submit(self) -> None:
        if not self._value("title"):
            self.notify("a task needs a title", severity="warning")
            self.query_one("#title", Input).focus()
            return
        self.dismiss(NewTask(title=self._value("title"), priority=self._value("priority") or "0",
                             tenant=self._value("tenant") or None, body=self._value("body")))

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._submit()

    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        self._submit()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class BoardSwitcher(ModalScreen[str | None]):
    """Pick another board. Enter opens it, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, slugs: list[str], current: str) -> None:
        super().__init__()
        self.slugs = slugs
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Switch board", classes="dialog-title")
            options = [Option(f"{s}  (current)" if s == self.current else s, id=s) for s in self.slugs]
            yield OptionList(*options, id="boards")

    def on_mount(self) -> None:
        boards = self.query_one(OptionList)
        if self.current in self.slugs:
            boards.highlighted = self.slugs.index(self.current)
        boards.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key, grouped. Any of escape, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]

    KEYS: ClassVar[list[tuple[str, str, str]]] = [
        ("Move", "← → / h l", "previous / next column"),
        ("Move", "↑ ↓ / k j", "previous / next card"),
        ("Move", "PgUp PgDn, Home End (g G)", "page, first, last card"),
        ("View", "enter", "open the detail pane (body, runs, log tail, events)"),
        ("View", "escape", "close the detail pane / clear the filter"),
        ("View", "/", "filter: title text or id prefix; 'tenant:NAME' for a tenant"),
        ("View", "v", "show / hide the archived column"),
        ("View", "s", "switch board"),
        ("View", "r", "reload everything now"),
        ("Act", "n", "new task"),
        ("Act", "c", "complete (asks first if the task is running)"),
        ("Act", "b", "block, with a reason (asks first if running)"),
        ("Act", "u", "unblock"),
        ("Act", "a", "approve a task in review"),
        ("Act", "x", "archive (asks first)"),
        ("Act", "m", "comment"),
        ("App", "?", "this help"),
        ("App", "q", "quit"),
    ]

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="dim")
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for group, keys, what in self.KEYS:
            table.add_row(group, keys, what)
        with Vertical(id="dialog", classes="-help"):
            yield Label("hermes kanban — keys", classes="dialog-title")
            yield Static(table)
            yield Label(Text("Updates arrive through the board's doorbell; toasts show completed, blocked, "
                             "gave up, crashed and timed out tasks.", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
