"""What every command shares: the `kanban` group, `--json`/`--board` options, error rendering and output.

Commands are thin: parse, make one call into `hermes_cli.kanban`, render. Domain errors become CLI errors here
only: one `error:` line on stderr (and `{"error": {...}}` on stdout with --json), exit code from the error class.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from hermes_cli.kanban.core.errors import BoardMissing, HermesError, InvalidValue, NotFound
from hermes_cli.kanban.core.models import Task
from hermes_cli.kanban.core.paths import resolve
from hermes_cli.kanban.core.textsafe import inline, terminal_safe
from hermes_cli.kanban.domain.board import Board

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


def _pinned(slug: str | None) -> bool:
    return slug is None and bool(os.environ.get("HERMES_KANBAN_DB"))


@contextmanager
def open_board(board: str | None, *, create: bool | None = None) -> Iterator[Board]:
    slug = board_slug(board)
    b = Board.open(slug, create=create)
    try:
        if b.created and _pinned(slug):
            # A pinned path that did not exist becomes a new, empty board: say so, or a typo goes unnoticed.
            click.echo(f"note: created new board at {b.paths.db}", err=True)
        yield b
    finally:
        b.close()


@contextmanager
def open_worker_board(board: str | None) -> Iterator[Board]:
    """The board of a worker-facing command (complete, block, heartbeat, request-review): never created. A pinned
    board that is gone (`boards rm` while the worker ran) raises BoardMissing (exit 4: complete/block spool)."""
    slug = board_slug(board)
    try:
        b = Board.open(slug, create=False)
    except NotFound:
        if not _pinned(slug):
            raise
        db = resolve(slug).db
        raise BoardMissing(
            f"board database {db} does not exist (the board was removed or moved); a worker's command never creates "
            "a board (see: hermes kanban boards list)"
        ) from None
    try:
        yield b
    finally:
        b.close()


def emit(as_json: bool, data: Any, human: str | Callable[[], str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=None, separators=(", ", ": "), default=str))
    elif human is not None:
        text = human() if callable(human) else human
        if text:
            # The last line of defence: human output quotes text users and workers wrote (renderers already escape
            # their single-line fields with `inline`); no control sequence from it reaches the reader's terminal.
            click.echo(terminal_safe(text))


def age(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    s = max(0.0, (now or time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def task_line(t: Task, now: float | None = None) -> str:
    tenant = f"  [{inline(t.tenant)}]" if t.tenant else ""
    return f"{t.id}  {t.status:<8} p{t.priority:<4} {age(t.created_at, now):>4}  {inline(t.title)}{tenant}"


def env_task_and_run(task_id: str | None, run_id: int | None) -> tuple[str, int | None]:
    """Inside a worker, the task and run come from the environment (HERMES_KANBAN_TASK / HERMES_KANBAN_RUN_ID).

    The environment's run id is used only for the environment's own task, so a worker addressing another task by
    id does not accidentally present its own fencing token for it.
    """
    env_task = os.environ.get("HERMES_KANBAN_TASK") or None
    task = task_id or env_task
    if task is None:
        raise InvalidValue("no task given: pass a task id (or run inside a worker, where HERMES_KANBAN_TASK is set)")
    if run_id is None and task == env_task:
        env_run = os.environ.get("HERMES_KANBAN_RUN_ID")
        if env_run:
            try:
                run_id = int(env_run)
            except ValueError:
                raise InvalidValue(f"HERMES_KANBAN_RUN_ID={env_run!r} is not a run id (an integer)") from None
            if not 1 <= run_id < 2**63:
                raise InvalidValue(f"invalid run id {run_id}: run ids are whole numbers from 1 to {2**63 - 1}")
    return task, run_id


def read_body(body: str | None, body_file: str | None) -> str:
    if body is not None and body_file is not None:
        raise InvalidValue("use either --body or --body-file, not both")
    if body_file is None:
        return body or ""
    try:
        if body_file == "-":
            return sys.stdin.read()
        with open(body_file, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidValue(f"cannot read --body-file {body_file}: {exc.__class__.__name__}: {exc}") from None


#: every module that registers commands, in `--help` order
COMMAND_MODULES = ("tasks", "boards", "events", "live", "health", "dispatch", "vocab")
#: the module that registers each command outside cli/tasks.py. Those modules are imported on first use, so the
#: commands workers and scripts run all day (create, claim, heartbeat, complete, ...) never pay for the dispatcher,
#: the backup and health tools or the TUI launcher. tests/test_import_hygiene.py checks this map is complete.
LAZY_COMMANDS = {
    "init": "boards", "boards": "boards", "events": "events",
    "notify-subscribe": "live", "notify-list": "live", "notify-unsubscribe": "live", "tui": "live",
    "doctor": "health", "backup": "health", "backups": "health", "restore": "health", "repair": "health",
    "reconcile-completions": "health", "dispatch": "dispatch", "demo": "dispatch",
    **dict.fromkeys(("assign", "reassign", "reclaim", "assignees", "promote", "edit", "gc", "runs", "log", "context",
                     "diagnostics", "tail", "watch", "specify", "decompose", "swarm"), "vocab"),
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

