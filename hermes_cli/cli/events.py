"""The event log: `events` prints events after a cursor; `events --follow` streams them as they commit."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import click

from hermes_cli.kanban.core.errors import UsageError
from hermes_cli.kanban.core.models import Event, iso
from hermes_cli.kanban.core.textsafe import inline
from hermes_cli.kanban.domain.board import Board
from hermes_cli.kanban.live.readers import RECHECK_S, EventReader, get_subscription, parse_kinds
from hermes_cli.kanban.store.engine import wait_durable

from .common import command, common, emit, open_board

#: with a kinds filter, persist a subscription's cursor after skipping this many non-matching events
ACK_EVERY = 1000


@command("events")
@click.option("--after", type=int, default=None, metavar="ID",
              help="Only events after this id (default: 0; with --follow, only new events).")
@click.option("--task", "task_id", default=None, metavar="ID", help="Only this task's events.")
@click.option("--kinds", default=None, metavar="K1,K2", help="Only these kinds, comma-separated.")
@click.option("--limit", type=int, default=None, metavar="N", help="At most N events (with --follow: stop after N).")
@click.option("--follow", "-f", is_flag=True, help="Keep running and print events as they are committed.")
@click.option("--subscription", default=None, metavar="NAME",
              help="Start from this subscription's cursor (and kinds); with --follow, advance it as events print.")
@click.option("--timeout", default=None, type=float, metavar="S", help="With --follow: stop after S seconds.")
@common
def kanban_events(after: int | None, task_id: str | None, kinds: str | None, limit: int | None, follow: bool,
                  subscription: str | None, timeout: float | None, board: str | None, as_json: bool) -> None:
    """Print the event log (every change to the board, in commit order).

    With --follow, keep printing events as they commit (woken by the board's doorbell, not by polling) until
    interrupted, --timeout or --limit; --json then prints one JSON object per line. With --subscription the
    cursor is persisted, so a restarted follower resumes where it stopped.

    Example:

    \b
        hermes kanban events --after 120 --kinds completed,blocked --json
        hermes kanban events --follow --kinds completed,gave_up --json
        hermes kanban events --follow --subscription ops-pager --json
    """
    kind_list = list(parse_kinds(kinds) or ()) or None
    if limit is not None and limit < 0:
        raise UsageError(f"invalid --limit {limit}: must be 0 or more")
    if not follow:
        if timeout is not None:
            raise UsageError("--timeout only applies with --follow")
        with open_board(board) as b:
            if subscription is not None:
                sub = get_subscription(b, subscription)
                after = sub.cursor if after is None else after
                kind_list = kind_list or (list(sub.kinds) if sub.kinds else None)
            evs = b.events(after or 0, task_id=task_id, kinds=kind_list, limit=limit)
        emit(as_json, [e.as_dict() for e in evs], lambda: "\n".join(_line(e) for e in evs) or "no events")
        return
    if task_id is not None:
        raise UsageError("--task cannot be combined with --follow (filter the stream with --kinds)")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"invalid --timeout {timeout}: must be more than 0 seconds")
    with open_board(board) as b:
        _follow(b, after=after, kinds=kind_list, limit=limit, subscription=subscription, timeout=timeout,
                as_json=as_json)


def _follow(b: Board, *, after: int | None, kinds: list[str] | None, limit: int | None, subscription: str | None,
            timeout: float | None, as_json: bool) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    printed = 0
    with EventReader(b, name="events-follow", after=after, kinds=kinds, subscription=subscription) as reader, \
            graceful_stop(reader) as stopping:
        safe = reader.cursor  # everything up to here has been printed (or skipped by the filter)
        while not stopping() and (limit is None or printed < limit):
            wait = RECHECK_S if deadline is None else min(RECHECK_S, deadline - time.monotonic())
            if wait <= 0:
                break
            evs = reader.wait(timeout=wait)
            if limit is not None and len(evs) > limit - printed:
                evs = evs[: limit - printed]
                safe = evs[-1].id if evs else safe
            else:
                safe = reader.cursor
            if evs:
                # What we print goes to another program: never an event a power cut could still take back (a
                # commit is visible a moment before it is durable, docs/guarantees.md "Group commit")
                wait_durable(b.db)
                if not write_batch(evs, as_json):
                    return  # not acknowledged: a subscription re-delivers the batch to the next follower
                printed += len(evs)
            # Acknowledge only what is on stdout already: a crash before this line re-delivers the batch.
            if evs or safe - reader.acked >= ACK_EVERY:
                reader.ack(safe)
        reader.ack(safe)


def write_batch(events: list[Event], as_json: bool) -> bool:
    """Print a batch of followed events; False when the reader of our stdout is gone (`| head -3`): a normal end of
    a stream, not an error."""
    try:
        sys.stdout.write("".join(stream_line(e, as_json) + "\n" for e in events))
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return False
    return True


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush of the dead pipe cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@contextmanager
def graceful_stop(reader: EventReader) -> Iterator[Callable[[], bool]]:
    """SIGINT/SIGTERM finish the batch being printed (and acknowledge it), then stop with exit 0."""
    flag = {"stop": False}

    def handler(signum: int, frame: FrameType | None) -> None:
        flag["stop"] = True
        reader.poke()

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:
            break  # not the main thread (embedded use): keep the host's handlers
    try:
        yield lambda: flag["stop"]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stream_line(e: Event, as_json: bool) -> str:
    if as_json:
        return json.dumps(e.as_dict(), separators=(", ", ": "), default=str)
    return _line(e)


def _line(e: Event) -> str:
    # inline: payloads carry titles, summaries and reasons as written; one event stays one inert line
    return f"{e.id:>6} {iso(e.created_at)} {inline(e.kind):<16} {inline(e.task_id or '-')} {_brief(e.payload)}"


def _brief(payload: dict[str, object]) -> str:
    return " ".join(inline(f"{k}={v}") for k, v in payload.items() if v not in (None, [], ""))
