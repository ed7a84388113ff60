"""The error screen: shown instead of the board when it cannot be opened or read (corrupt, not a database,
unsupported SQLite, missing board...). It names the board and the next command to run; it never crashes the app."""

from __future__ import annotations

from typing import ClassVar, Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from hermes_cli.kanban.core.errors import HermesError

from ..format import clean

#: what the person chose ("dismissed": the app closed the screen itself, the board opened meanwhile)
ErrorChoice = Literal["retry", "switch", "quit", "dismissed"]


class BoardErrorScreen(Screen[ErrorChoice]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "choose('retry')", "Retry"),
        Binding("s", "choose('switch')", "Switch board"),
        Binding("q", "choose('quit')", "Quit"),
    ]

    def __init__(self, board: str, error: HermesError) -> None:
        super().__init__()
        self.board = clean(board)  # a label from a pinned db path: anything a path can hold
        self.error = error

    def compose(self) -> ComposeResult:
        kind = "storage unhealthy" if self.error.exit_code == 4 else self.error.code.replace("_", " ")
        with Vertical(id="error-box"):
            yield Label(Text(f"Cannot show board {self.board}", style="bold"), id="error-title")
            yield Label(Text(f"{kind} ({self.error.code})", style="bold red"))
            yield Static(Text(clean(self.error.message)), id="error-message")  # messages quote paths and input
            yield Static(Text.assemble(
                ("Next steps:\n", "bold"),
                (f"  hermes kanban doctor --board {self.board}", "cyan"), "   check the board and say what is wrong\n",
                (f"  hermes kanban repair --board {self.board}", "cyan"), "   rebuild damaged indexes\n",
                ("  hermes kanban restore ...", "cyan"), "   go back to a verified backup\n",
                "The board was not changed by the TUI.",
            ), id="error-help")
        yield Footer()

    def action_choose(self, choice: ErrorChoice) -> None:
        self.dismiss(choice)
