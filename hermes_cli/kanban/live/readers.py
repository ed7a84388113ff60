"""Live notifications: readers that follow a board's event log, woken by the FIFO doorbell (LISTEN/NOTIFY on a
PostgreSQL board: live/bells.py).

The event log (`events`, AUTOINCREMENT ids in commit order) is the only source of truth; the doorbell only says
"look now". A reader keeps a cursor on `events.id` and, on start and on every wake, reads everything after it, so a
lost or coalesced ring costs latency, never an event. Readers also re-read every few seconds while idle
(`RECHECK_S`), which bounds the latency of a ring that was lost entirely.

    with Board.open() as board, EventReader(board, name="me", kinds=["completed"]) as reader:
        while True:
            for event in reader.wait(timeout=5):
                print(event.id, event.kind, event.task_id)

Subscriptions are named cursors stored in the board (`notify-subscribe`), so a reader restarted an hour later
resumes where it stopped. They are acknowledged after the reader has handled a batch (`EventReader.ack`):
delivery is at-least-once across a crash (the batch being handled when the reader died is delivered again) and
exactly-once across a graceful stop. Event ids only grow, so a consumer can drop repeats by comparing ids.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.errors import InvalidValue, NotFound
from ..core.models import EVENT_KINDS, Event, Row
from ..core.paths import BoardPaths
from ..store import subscriptions as subs_sql
from ..store import tasks as tasks_sql
from ..store.connection import Database
from .bells import open_bell


class Board(Protocol):
    """What the readers need of an open board: its store connection and paths. The domain's Board is one (the
    live layer sits below the domain, so it names only this much of it)."""

    @property
    def db(self) -> Database: ...

    @property
    def paths(self) -> BoardPaths: ...

#: kinds a person wants to hear about: shown as toasts by the TUI
TOAST_KINDS: tuple[str, ...] = ("completed", "blocked", "gave_up", "crashed", "timed_out")
#: how often an idle reader re-reads the log even without a ring (bounds the cost of a lost ring)
RECHECK_S = 3.0
#: events per read; a reader that is behind gets several batches back to back
BATCH = 500
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Subscription(Row):
    """A named, persistent cursor on the event log."""

    name: str
    cursor: int
    kinds: tuple[str, ...] | None
    created_at: float
    updated_at: float
    #: events after the cursor that match the kinds (filled in by `list_subscriptions`)
    pending: int | None = None

    @classmethod
    def from_store(cls, row: dict[str, Any]) -> Subscription:
        return cls(
            name=row["name"], cursor=int(row["cursor"]), kinds=subs_sql.decode_kinds(row["kinds"]),
            created_at=row["created_at"], updated_at=row["updated_at"], pending=row.get("pending"),
        )

    def as_dict(self) -> dict[str, Any]:
        out = Row.as_dict(self)
        out["kinds"] = list(self.kinds) if self.kinds else None
        return out


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InvalidValue(
            f"invalid subscription name {name!r}: use 1-64 chars of a-z, 0-9, '_', '.', ':' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_kinds(kinds: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """`"completed,blocked"` or an iterable of kinds -> a tuple (None = every kind)."""
    if kinds is None:
        return None
    items = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    out = tuple(dict.fromkeys(k.strip() for k in items if k and k.strip()))
    for k in out:
        if k not in EVENT_KINDS:  # a typo would otherwise filter out everything, silently
            raise InvalidValue(f"invalid event kind {k!r}: use one of {', '.join(EVENT_KINDS)}")
    return out or None


def subscribe(
    board: Board, name: str, *, kinds: str | Iterable[str] | None = None, after: int | None = None
) -> tuple[Subscription, bool]:
    """Create a subscription (cursor at `after`, default: the newest event, so only new events are delivered).

    Returns (subscription, created). Subscribing again under an existing name keeps its cursor; new `kinds`
    replace the old ones.
    """
    name = check_name(name)
    wanted = parse_kinds(kinds)
    if after is not None and after < 0:
        raise InvalidValue(f"invalid cursor {after}: event ids start at 1 (use 0 to replay everything)")
    existing = subs_sql.get(board.db, name)
    if existing is not None and (kinds is None or subs_sql.decode_kinds(existing["kinds"]) == wanted):
        # Nothing to change: no write transaction, so a TUI opening a busy board never waits for the write lock.
        return _with_pending(board, existing), False

    def tx() -> tuple[Subscription, bool]:
        now = time.time()
        row = subs_sql.get(board.db, name)
        if row is not None:
            if kinds is not None and subs_sql.decode_kinds(row["kinds"]) != wanted:
                subs_sql.set_kinds(board.db, name, wanted, now)
                row = subs_sql.get(board.db, name)
                assert row is not None
            return _with_pending(board, row), False
        tasks_sql.add_event(board.db, "subscribed", now, name=name, kinds=list(wanted) if wanted else None)
        cursor = tasks_sql.last_event_id(board.db) if after is None else after
        subs_sql.insert(board.db, name, cursor, wanted, now)
        created = subs_sql.get(board.db, name)
        assert created is not None
        return _with_pending(board, created), True

    return board.db.write(tx)


def _with_pending(board: Board, row: dict[str, Any]) -> Subscription:
    pending = subs_sql.count_after(board.db, int(row["cursor"]), subs_sql.decode_kinds(row["kinds"]))
    return Subscription.from_store({**row, "pending": pending})


def get_subscription(board: Board, name: str) -> Subscription:
    row = subs_sql.get(board.db, check_name(name))
    if row is None:
        raise NotFound(f"subscription {name} not found (see: hermes kanban notify-list)")
    return Subscription.from_store(row)


def list_subscriptions(board: Board) -> list[Subscription]:
    with board.db.read():
        return [Subscription.from_store(r) for r in subs_sql.all_with_pending(board.db)]


def unsubscribe(board: Board, name: str) -> Subscription:
    """Remove a subscription. Returns what it was."""
    check_name(name)

    def tx() -> Subscription:
        row = subs_sql.get(board.db, name)
        if row is None:
            raise NotFound(f"subscription {name} not found (see: hermes kanban notify-list)")
        subs_sql.delete(board.db, name)
        tasks_sql.add_event(board.db, "unsubscribed", time.time(), name=name)
        return Subscription.from_store(row)

    return board.db.write(tx)


def ack(board: Board, name: str, cursor: int) -> int:
    """Persist that everything up to `cursor` was handled. Never moves a cursor back. Writes no event and rings
    no doorbell (bookkeeping of a reader is not a change to the board)."""

    def tx() -> int:
        stored = subs_sql.advance(board.db, name, cursor, time.time())
        if stored is None:
            raise NotFound(f"subscription {name} was removed while in use (see: hermes kanban notify-list)")
        return stored

    return board.db.write(tx)


def missed_summary(
    board: Board, after: int, upto: int, kinds: Sequence[str] = TOAST_KINDS, recent: int = 5
) -> tuple[dict[str, int], list[Event]]:
    """What a returning reader missed, without replaying it: counts per kind of the events in (after, upto] among
    `kinds`, and the newest `recent` of them (oldest first)."""
    return subs_sql.summary_between(board.db, after, upto, list(kinds), recent)


class EventReader:
    """Follow one board's event log: a doorbell FIFO plus a cursor.

    The FIFO is opened before the first read, so no commit can fall between "read up to here" and "listen from
    here". Not thread-safe, except `poke()`, which another thread may call to wake `wait()` (e.g. to stop).
    """

    def __init__(
        self,
        board: Board,
        *,
        name: str = "reader",
        after: int | None = None,
        kinds: str | Sequence[str] | None = None,
        subscription: str | None = None,
        batch: int = BATCH,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.board = board
        self.subscription = subscription
        self.batch = batch
        self.kinds = parse_kinds(kinds)
        # The FIFO on a SQLite board, LISTEN on a PostgreSQL one (live/bells.py): listening before the first read.
        self.doorbell = open_bell(board.db, board.paths, name, warn=warn)
        try:
            if subscription is not None:
                sub = get_subscription(board, subscription)
                self.cursor = sub.cursor if after is None else after
                #: the subscription's cursor as stored (`after` may start reading elsewhere)
                self.acked = sub.cursor
                if self.kinds is None:
                    self.kinds = sub.kinds
            else:
                self.cursor = tasks_sql.last_event_id(board.db) if after is None else after
                self.acked = self.cursor
        except BaseException:
            self.doorbell.close()
            raise
        #: whether events after the cursor may be waiting (true at start: catch up before waiting)
        self.behind = True

    def poll(self) -> list[Event]:
        """The next batch after the cursor (maybe empty), advancing the cursor past it."""
        events, self.cursor, self.behind = subs_sql.read_after(self.board.db, self.cursor, self.kinds, self.batch)
        return events

    def wait(self, timeout: float | None = RECHECK_S) -> list[Event]:
        """The next batch: at once if behind, else once the doorbell rings or `timeout` passes (maybe empty)."""
        if not self.behind:
            if not self.doorbell.wait(timeout):
                # Idle: make sure our FIFO is still there to be rung (re-publish it if it vanished).
                self.doorbell.repair()
        return self.poll()

    def ack(self, upto: int | None = None) -> None:
        """Persist the subscription's cursor (no-op without a subscription)."""
        target = self.cursor if upto is None else upto
        if self.subscription is not None and target > self.acked:
            self.acked = ack(self.board, self.subscription, target)

    def poke(self) -> None:
        self.doorbell.poke()

    def close(self) -> None:
        self.doorbell.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
