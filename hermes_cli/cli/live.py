"""Live board commands: persistent notification subscriptions and the TUI.

`tui` exec's `python -m tui` (tui/__main__.py): the CLI package never imports Textual (the import-linter contracts).
"""

from __future__ import annotations

import os
import sys

import click

from hermes_cli.kanban.core.errors import UsageError
from hermes_cli.kanban.core.hubconf import HUB_URL_ENV, check_hub_url
from hermes_cli.kanban.core.models import iso
from hermes_cli.kanban.live.readers import Subscription, check_name, list_subscriptions, subscribe, unsubscribe

from .common import board_slug, command, common, emit, open_board


def _sub_line(s: Subscription) -> str:
    kinds = ",".join(s.kinds) if s.kinds else "all"
    pending = "" if s.pending is None else f"  pending {s.pending}"
    return f"{s.name}  cursor {s.cursor}  kinds {kinds}{pending}  updated {iso(s.updated_at)}"


@command("notify-subscribe")
@click.argument("name")
@click.option("--kinds", default=None, metavar="K1,K2", help="Only these event kinds (default: every kind).")
@click.option("--after", type=int, default=None, metavar="ID",
              help="Start after this event id (default: the newest event; 0 replays the whole log).")
@common
def kanban_notify_subscribe(name: str, kinds: str | None, after: int | None, board: str | None,
                            as_json: bool) -> None:
    """Create a named subscription: a cursor on the event log that is kept in the board.

    Subscribing again under an existing name keeps its cursor (new --kinds replace the old ones). Read it with
    `events --follow --subscription NAME`; the TUI uses one per board, so a restart shows what it missed.

    Example:

    \b
        hermes kanban notify-subscribe ops-pager --kinds completed,gave_up,crashed
        hermes kanban events --follow --subscription ops-pager --json
    """
    with open_board(board) as b:
        sub, created = subscribe(b, name, kinds=kinds, after=after)
    verb = "subscribed" if created else "already subscribed"
    emit(as_json, {**sub.as_dict(), "created": created}, f"{verb}: {_sub_line(sub)}")


@command("notify-list")
@click.argument("task_id", required=False)
@common
def kanban_notify_list(task_id: str | None, board: str | None, as_json: bool) -> None:
    """List subscriptions with their cursor and how many events wait after it. Subscriptions here are board-wide:
    with a TASK_ID (hermes-agent's per-task form) the task must exist, and every subscription listed receives its
    events (those of the kinds it asked for).

    Example:

    \b
        hermes kanban notify-list --json
    """
    with open_board(board) as b:
        if task_id is not None:
            b.get_task(task_id)  # an unknown task: NotFound, exit 1
        subs = list_subscriptions(b)
    emit(as_json, [s.as_dict() for s in subs],
         lambda: "\n".join(_sub_line(s) for s in subs) or "no subscriptions (see: hermes kanban notify-subscribe)")


@command("notify-unsubscribe")
@click.argument("name")
@common
def kanban_notify_unsubscribe(name: str, board: str | None, as_json: bool) -> None:
    """Remove a subscription (its cursor is forgotten).

    Example:

    \b
        hermes kanban notify-unsubscribe ops-pager
    """
    with open_board(board) as b:
        sub = unsubscribe(b, name)
    emit(as_json, {**sub.as_dict(), "removed": True}, f"unsubscribed: {sub.name}")


@command("tui")
@click.option("--subscription", default=None, metavar="NAME",
              help="Subscription that keeps the TUI's place (default: tui-<board>).")
@click.option("--hub", "hub", metavar="URL", default=None,
              help="Show the boards on this hub instead, read-only and live (--board: an id, a slug or HOST:SLUG; "
                   "default: every board on the hub).")
@common
def kanban_tui(subscription: str | None, hub: str | None, board: str | None, as_json: bool) -> None:
    """Open the live board in the terminal (columns, details, actions, toasts).

    Keys: arrows or hjkl move, enter opens details, n new, c complete, b block, u unblock, a approve,
    x archive, m comment, / filter, s switch board, ? help, q quit.

    With --hub URL it shows the hub's copy of the fleet's boards instead (every board, or --board's), read-only:
    it follows new events as the boards sync; the action keys change nothing.

    Example:

    \b
        hermes kanban tui --board research
        hermes kanban tui --hub postgresql://hermes@hub.example/fleet --board build-1:default
    """
    if as_json:
        raise UsageError("tui is interactive and has no --json output (for a JSON stream use: "
                         "hermes kanban events --follow --json)")
    if subscription is not None:
        if hub is not None:
            raise UsageError("--subscription keeps a place on a local board; a hub view (--hub) keeps none")
        check_name(subscription)
    if hub is not None:
        hub = check_hub_url(hub)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("tui needs a terminal (for a stream of events use: hermes kanban events --follow)")
    # The TUI runs in this same process and terminal, but as `python -m tui`: exec'd, so this package never imports
    # Textual (one command for the user; a clean layer boundary for the code). -P keeps the working directory off
    # sys.path, so the installed tui package runs.
    argv = [sys.executable, "-P", "-m", "tui"]
    slug = board_slug(board)
    if slug is not None:
        argv += ["--board", slug]
    if subscription is not None:
        argv += ["--subscription", subscription]
    env = dict(os.environ)
    if hub is not None:
        # The URL may hold a password: through the environment, never the command line (ps shows that to everyone).
        env[HUB_URL_ENV] = hub
        argv.append("--hub")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
