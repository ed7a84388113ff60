"""What every command shares: the `kanban` group, `--json`/`--board` options, error rendering and output.

Commands are thin: parse, make one call into `hermes_cli.kanban`, render. Domain errors become CLI errors here
only: one `error:` line on stderr (and `{"error": {...}}` on stdout with --json), exit code from the error class.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from hermes_cli.kanban.core.errors import HermesError
from hermes_cli.kanban.domain.board import Board

from . import hot, render
from .hot import env_task_and_run, read_body  # noqa: F401  (re-exported: the commands' shared option semantics)
from .render import Human, age, task_line  # noqa: F401  (re-exported: shared human output)

F = TypeVar("F", bound=Callable[..., Any])


def wants_json(argv: list[str] | None = None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def one_line(text: str) -> str:
    """`text` with every line break and control character escaped: an error is always exactly one line, even when
    it quotes user input (click quotes arguments verbatim, e.g. "unexpected extra argument (a\rb)")."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def fail(err: HermesError, as_json: bool) -> None:
    message = one_line(err.message)
    if as_json:
        click.echo(json.dumps({"error": {"code": err.code, "message": message}}))
    click.echo(f"error: {message}", err=True)
    sys.exit(err.exit_code)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(f)


def board_option(f: F) -> F:
    return click.option(
        "--board",
        "board",
        metavar="SLUG",
        default=None,
        help="Board to use (default: $HERMES_KANBAN_BOARD, or 'default'; $HERMES_KANBAN_DB pins a file).",
    )(f)


def common(f: F) -> F:
    """--board and --json, stacked."""
    return board_option(json_option(f))


def board_slug(board: str | None) -> str | None:
    """The command's --board, else the group's --board, else None (environment decides)."""
    if board is not None:
        return board
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    for c in _ctx_chain(ctx):
        if c is not root and isinstance(c.obj, dict) and c.obj.get("board"):
            return str(c.obj["board"])
    return None


def _ctx_chain(ctx: click.Context | None) -> Iterator[click.Context]:
    while ctx is not None:
        yield ctx
        ctx = ctx.parent


@contextmanager
def open_board(board: str | None, *, create: bool | None = None) -> Iterator[Board]:
    """hot.open_board for the command's --board (else the group's)."""
    with hot.open_board(board_slug(board), create=create) as b:
        yield b


@contextmanager
def open_worker_board(board: str | None) -> Iterator[Board]:
    """hot.open_worker_board for the command's --board (else the group's): a worker's command never creates a
    board."""
    with hot.open_worker_board(board_slug(board)) as b:
        yield b


def emit(as_json: bool, data: Any, human: Human = None) -> None:
    render.emit(as_json, data, human)


#: every module that registers commands, in `--help` order
COMMAND_MODULES = ("tasks", "boards", "events", "live", "health", "dispatch", "sync", "vocab")
#: the module that registers each command outside cli/tasks.py. Those modules are imported on first use, so the
#: commands workers and scripts run all day (create, claim, heartbeat, complete, ...) never pay for the dispatcher,
#: the backup and health tools or the TUI launcher. tests/test_import_hygiene.py checks this map is complete.
LAZY_COMMANDS = {
    "init": "boards", "boards": "boards", "events": "events",
    "notify-subscribe": "live", "notify-list": "live", "notify-unsubscribe": "live", "tui": "live",
    "doctor": "health", "backup": "health", "backups": "health", "restore": "health", "repair": "health",
    "reconcile-completions": "health", "dispatch": "dispatch", "daemon": "dispatch", "demo": "dispatch",
    "sync": "sync", "hub": "sync",
    **dict.fromkeys(("assign", "reassign", "reclaim", "assignees", "promote", "edit", "gc", "runs", "log", "context",
                     "diagnostics", "tail", "watch", "specify", "decompose", "swarm", "reopen-review", "schedule",
                     "set-model"),
                    "vocab"),
}
#: hermes-agent's other names for commands (resolved on lookup; not listed in --help)
ALIASES = {"ls": "list", "diag": "diagnostics"}


def load_all_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"hermes_cli.cli.{name}")


class KanbanGroup(click.Group):
    """Loads command modules on first use, and lists commands in the order of the CLI contract in `--help`."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd_name = ALIASES.get(cmd_name, cmd_name)
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            import importlib

            importlib.import_module(f"hermes_cli.cli.{LAZY_COMMANDS[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        load_all_commands()
        return list(self.commands)


@click.group(name="kanban", cls=KanbanGroup)
@click.option("--board", "board", metavar="SLUG", default=None, help="Board for every command below.")
@click.pass_context
def kanban(ctx: click.Context, board: str | None) -> None:
    """A local-first task board for fleets of agent processes.

    Example:

    \b
        hermes kanban create "write the report" --priority 5
        hermes kanban list --status ready
    """
    ctx.obj = {"board": board}


def command(name: str, **kwargs: Any) -> Callable[[F], F]:
    """`@command("create")` registers on the kanban group under the contract's name."""

    def deco(f: F) -> F:
        return kanban.command(name=name, **kwargs)(f)  # type: ignore[return-value]

    return deco

