"""Live board commands: persistent notification subscriptions and the TUI.

`tui` exec's `python -m tui` (tui/__main__.py): the CLI package never imports Textual (the import-linter contracts).
"""

from __future__ import annotations

import os
import re
import sys

import click

from hermes_cli.kanban.core.errors import UsageError
from hermes_cli.kanban.core.hubconf import HUB_URL_ENV, check_hub_url
from hermes_cli.kanban.core.models import iso
from hermes_cli.kanban.live.readers import Subscription, check_name, list_subscriptions, subscribe, unsubscribe

from . import render
from .common import board_slug, command, common, emit, open_board


def _sub_line(s: Subscription) -> str:
    kinds = ",".join(s.kinds) if s.kinds else "all"
    pending = "" if s.pending is None else f"  pending {s.pending}"
    return f"{s.name}  cursor {s.cursor}  kinds {kinds}{pending}  updated {iso(s.updated_at)}"


#: the events hermes-agent's gateway delivers to a subscribed chat (its terminal kinds of a task)
CHAT_KINDS = ("completed", "blocked", "gave_up", "crashed", "timed_out")
#: hermes-agent's chat options, accepted with --platform only (what they say is kept in the subscription's name or
#: echoed back; nothing here sends a chat message)
_CHAT_OPTIONS = ("--chat-id", "--thread-id", "--user-id", "--user-id-alt", "--chat-type", "--notifier-profile",
                 "--delivery-mode")


def _chat_options(f):  # type: ignore[no-untyped-def]
    for opt, metavar, help_ in reversed((
        ("--platform", "P", "hermes-agent's form: NAME is a task id, and the chat P/--chat-id is subscribed to its "
                            "terminal events (a named subscription; see notifications.md)."),
        ("--chat-id", "C", "With --platform: the chat."),
        ("--thread-id", "T", "With --platform: the thread in the chat."),
        ("--user-id", "U", "With --platform: accepted, not used here."),
        ("--user-id-alt", "U", "With --platform: accepted, not used here."),
        ("--chat-type", "dm|group|channel|thread", "With --platform: accepted, not used here."),
        ("--notifier-profile", "P", "With --platform: accepted, not used here."),
        ("--delivery-mode", "notify|notify+wake|wake", "With --platform: accepted, not used here."),
    )):
        f = click.option(opt, opt.lstrip("-").replace("-", "_"), default=None, metavar=metavar, help=help_)(f)
    return f


def _chat_name(task_id: str, platform: str | None, chat: dict[str, str | None], verb: str) -> str | None:
    """hermes-agent's `notify-subscribe TASK --platform P --chat-id C [--thread-id T]`: the subscription's name,
    `P:C[:T]:TASK` (lowercased, other characters as `_`); None for our own form (NAME, no chat options)."""
    given = [o for o in _CHAT_OPTIONS if chat.get(o.lstrip("-").replace("-", "_")) is not None]
    if platform is None:
        if given:
            raise UsageError(", ".join(_CHAT_OPTIONS[:-1]) + f" and {_CHAT_OPTIONS[-1]} only apply with --platform")
        return None
    if chat.get("chat_id") is None:
        raise UsageError(f"--platform needs --chat-id: hermes kanban {verb} TASK_ID --platform P --chat-id C")
    thread = chat.get("thread_id")
    parts = [platform, chat.get("chat_id") or ""] + ([thread] if thread else []) + [task_id]
    name = ":".join(re.sub(r"[^a-z0-9_.-]", "_", part.lower()) for part in parts)
    return name[:64] if name[:1].isalnum() else ("c" + name)[:64]


@command("notify-subscribe")
@click.argument("name")
@click.option("--kinds", default=None, metavar="K1,K2", help="Only these event kinds (default: every kind).")
@click.option("--after", type=int, default=None, metavar="ID",
              help="Start after this event id (default: the newest event; 0 replays the whole log).")
@_chat_options
@common
def kanban_notify_subscribe(name: str, kinds: str | None, after: int | None, platform: str | None,
                            board: str | None, as_json: bool, **chat: str | None) -> None:
    """Create a named subscription: a cursor on the event log that is kept in the board.

    Subscribing again under an existing name keeps its cursor (new --kinds replace the old ones). Read it with
    `events --follow --subscription NAME`; the TUI uses one per board, so a restart shows what it missed.

    hermes-agent's form, `notify-subscribe TASK_ID --platform P --chat-id C [--thread-id T] ...`, subscribes
    `P:C[:T]:TASK_ID` to the task's terminal events (completed, blocked, gave_up, crashed, timed_out). There is no
    chat gateway here: read it with `events --follow --subscription NAME --task TASK_ID` and deliver it yourself.

    Example:

    \b
        hermes kanban notify-subscribe ops-pager --kinds completed,gave_up,crashed
        hermes kanban events --follow --subscription ops-pager --json
        hermes kanban notify-subscribe t_3fa2b1c4d5e6 --platform telegram --chat-id 12345678
    """
    chat_name = _chat_name(name, platform, chat, "notify-subscribe")
    with open_board(board) as b:
        if chat_name is not None:
            b.get_task(name)  # an unknown task: NotFound, exit 1
            sub, created = subscribe(b, chat_name, kinds=kinds or ",".join(CHAT_KINDS), after=after)
        else:
            sub, created = subscribe(b, name, kinds=kinds, after=after)
    verb = "subscribed" if created else "already subscribed"
    data: dict[str, object] = {**sub.as_dict(), "created": created}
    if chat_name is not None:
        data.update(task_id=name, platform=platform, **chat)
        render.warn(f"note: no chat gateway here: nothing is sent to {platform}; read the task's events with "
                    f"hermes kanban events --follow --subscription {chat_name} --task {name}")
    emit(as_json, data, f"{verb}: {_sub_line(sub)}")


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
@_chat_options
@common
def kanban_notify_unsubscribe(name: str, platform: str | None, board: str | None, as_json: bool,
                              **chat: str | None) -> None:
    """Remove a subscription (its cursor is forgotten). hermes-agent's form, `notify-unsubscribe TASK_ID --platform P
    --chat-id C [--thread-id T]`, removes what its `notify-subscribe` made.

    Example:

    \b
        hermes kanban notify-unsubscribe ops-pager
        hermes kanban notify-unsubscribe t_3fa2b1c4d5e6 --platform telegram --chat-id 12345678
    """
    chat_name = _chat_name(name, platform, chat, "notify-unsubscribe")
    with open_board(board) as b:
        sub = unsubscribe(b, chat_name or name)
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
