"""One board's sync to one hub: `hermes kanban sync --once | --follow`.

The loop: take the lease (or skip), resume from the hub's ack (the truth: a sync SIGKILLed mid-batch lost nothing
the hub committed, and resends nothing twice because every insert is keyed by (board id, event id)), send everything
after it in batches of at most BATCH events, one hub transaction per batch, and write the local checkpoint after the
batches (at most every CHECKPOINT_EVERY_S while events stream in, always on SIGTERM and at exit). `--follow` then
waits on the board's doorbell, so a change reaches the hub within about one round trip of its commit; it re-reads
at least every REFRESH_S, refreshing the lease.

Failures: a hub that cannot be reached is retried with a short capped backoff under --follow (recorded for doctor,
one line when it starts failing and one when it is back); with --once it is the exit code. Authentication,
permission and version refusals are never retried: one loud line, exit 4. After CHECKPOINT_FAILURES_MAX consecutive
failed checkpoint writes the sync stops with exit 4 instead of carrying on blind.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any

from ..core import procs
from ..core.errors import StorageError
from ..core.hubconf import redact
from ..domain.board import Board
from ..durability import sync_status
from ..live.doorbell import Doorbell
from ..store import sync as sync_sql
from ..store.hub import schema, writes
from ..store.hub.link import HubAuthFailed, HubError, HubLink, HubVersionRefused, SyncLeaseLost
from . import lease, outbox

#: events per batch (one hub transaction each)
BATCH = 500
#: while events stream in, the local checkpoint is written at most this often (the hub's ack is the truth; the
#: local copy only feeds gc's floor and doctor, and a write per doorbell ring would double the board's writes)
CHECKPOINT_EVERY_S = 0.5
#: consecutive failed checkpoint writes before the sync stops with an error
CHECKPOINT_FAILURES_MAX = 5
#: backoff between attempts to reach a hub that is down (--follow), doubling up to the cap
RETRY_FIRST_S = 0.25
RETRY_CAP_S = 2.0
#: an idle --follow re-reads the board at least this often (a lost doorbell ring costs at most this)
RECHECK_S = 3.0


class CheckpointFailing(StorageError):
    """The local checkpoint could not be written, again and again."""

    code = "sync_checkpoint"


@dataclass
class SyncResult:
    board: str
    hub: str
    board_id: str | None = None
    status: str = "synced"  #: synced, skipped or stopped
    reason: str = "caught up"  #: caught up, timeout, signal, lease held, off
    sent: int = 0  #: events sent
    inserted: int = 0  #: events new to the hub (sent minus resends)
    batches: int = 0
    acked: int | None = None  #: the hub's ack at the end (None: the hub was not reached)
    pending: int = 0  #: local events after the ack at the end
    took_over: str | None = None
    holder: dict[str, Any] | None = None
    lock_broken: dict[str, Any] | None = None
    hub_errors: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        out.update(self.extra)
        out["skipped"] = self.skipped
        return out

    def human(self) -> str:
        if self.skipped:
            return f"sync {self.board} -> {self.hub}: skipped ({self.reason})"
        broke = f", broke a stale lock ({self.lock_broken['host']} pid {self.lock_broken['pid']})" \
            if self.lock_broken else ""
        has = "hub not reached" if self.acked is None else f"hub has up to event {self.acked}"
        return (f"sync {self.board} -> {self.hub}: {self.reason}: sent {self.sent} events in {self.batches} "
                f"batches ({self.inserted} new), {has}, {self.pending} pending{broke}")


class Sync:
    """Sync `board` to the hub at `url` (see the module docstring). `stop()` may be called from a signal handler."""

    def __init__(self, board: Board, url: str, *, batch: int = BATCH,
                 log: Callable[[str], None] | None = None) -> None:
        self.board = board
        self.link = HubLink(url)
        self.hub = redact(url)
        self.batch = batch
        self.log = log or (lambda _m: None)
        self.board_id = ""
        self.token: int | None = None
        self.acked = 0
        self._acked_known = False
        self.local_mark = 0
        self._mark_at = 0.0
        self._refreshed = 0.0
        self._checkpoint_failures = 0
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self._stop = False
        self._bell: Doorbell | None = None

    # -- control -----------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop = True
        if self._bell is not None:
            self._bell.poke()

    @contextmanager
    def signals_stop(self) -> Iterator[None]:
        """SIGINT/SIGTERM finish the batch in flight, write the checkpoint, release the lease and exit 0."""
        old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            def handler(signum: int, frame: FrameType | None) -> None:
                self.stop()

            old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # -- the loop ----------------------------------------------------------------------------------------------------
    def run(self, *, follow: bool, timeout: float | None = None,
            break_lock_max_age: float | None = None) -> SyncResult:
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        result = SyncResult(self.board.slug, self.hub)
        self.board_id = result.board_id = outbox.board_id(self.board)
        self.local_mark = outbox.register_hub(self.board, self.hub)
        self._bell = Doorbell(self.board.paths.notify_dir, "hub-sync") if follow else None
        delay = RETRY_FIRST_S
        try:
            while True:
                try:
                    if self.token is None:
                        if not self._start(result, break_lock_max_age):
                            return result
                        break_lock_max_age = None  # broken once, at start; a later re-acquire follows the rules
                    self._pump(result, deadline)
                    self._refresh_if_due()
                    self._recovered()
                    delay = RETRY_FIRST_S
                except (CheckpointFailing, HubAuthFailed, HubVersionRefused, SyncLeaseLost) as exc:
                    self._record_error(exc.message)
                    raise
                except (HubError, StorageError) as exc:
                    result.hub_errors += 1
                    self._failing(exc)
                    if not follow:
                        raise
                    if isinstance(exc, HubError):
                        # Resume from the hub's ack once it is back, never from our memory of it: a hub that
                        # crashed may have lost its last commits (synchronous_commit=off, a failover), and our
                        # lease row with them. Starting over re-reads both.
                        self.token = None
                    self.link.close()
                    self._backoff(min(delay, self._remaining(deadline)))
                    delay = min(delay * 2, RETRY_CAP_S)
                    if not self._stop and (deadline is None or time.monotonic() < deadline):
                        continue
                    # stopping while the hub is away: the checks below end the run (the error stays recorded)
                if self._stop:
                    result.status, result.reason = "stopped", "signal"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    result.status, result.reason = "stopped", "timeout"
                    break
                if not follow:
                    break
                wait = min(RECHECK_S, lease.REFRESH_S, self._remaining(deadline))
                if self.acked != self.local_mark:
                    wait = min(wait, max(0.0, CHECKPOINT_EVERY_S - (time.monotonic() - self._mark_at)))
                self._wait(wait)
                self._checkpoint(force=False)
        finally:
            self._finish(result, started)
        return result

    def _remaining(self, deadline: float | None) -> float:
        return RECHECK_S if deadline is None else max(0.0, deadline - time.monotonic())

    def _wait(self, seconds: float) -> None:
        if self._stop:
            return
        if self._bell is not None:
            self._bell.wait(seconds)
        else:
            time.sleep(seconds)

    def _backoff(self, seconds: float) -> None:
        """Wait out a retry delay: commits ringing the doorbell meanwhile must not turn the backoff into one attempt
        per commit (a hub that is down would then cost the board's writers CPU); only a stop ends it early."""
        until = time.monotonic() + seconds
        while not self._stop and (left := until - time.monotonic()) > 0:
            self._wait(left)

    def _start(self, result: SyncResult, break_lock_max_age: float | None) -> bool:
        """Prepare the hub, take the lease, resume from the hub's ack. False: skipped (someone else holds it)."""
        schema.prepare(self.link)
        if break_lock_max_age is not None:
            freed, kept = lease.break_lock(self.link, self.board_id, break_lock_max_age)
            if freed is not None:
                result.lock_broken = freed.as_dict()
                self.log(f"broke the sync lease of {freed.describe()} (older than --max-age {break_lock_max_age:g}s)")
            elif kept is not None:
                self.log(f"not breaking the sync lease of {kept.describe()}: refreshed within --max-age "
                         f"{break_lock_max_age:g}s")
        got = lease.acquire(self.link, self.board_id)
        if got.skipped:
            assert got.holder is not None
            result.status, result.reason = "skipped", f"lease held by {got.holder.describe()}"
            result.holder = got.holder.as_dict()
            return False
        assert got.token is not None
        token = self.token = got.token
        if got.took_over is not None and got.holder is not None:
            result.took_over = got.took_over
            self.log(f"took the sync lease over from {got.holder.describe()} ({got.took_over})")
        host = procs.HOST
        writes.register_board(self.link, self.board_id, self.board.slug, host, schema.LATEST)
        self.acked = writes.acked(self.link, self.board_id)
        self._acked_known = True
        self._refreshed = time.monotonic()
        if self.acked < sync_sql.first_event_id(self.board.db) - 1:
            # Events this hub never had are gone (gc ran before the board first synced here): their tasks would
            # never get a snapshot from an event, so every task is sent once.
            chunks, as_of = outbox.all_tasks(self.board, self.batch)
            for chunk in chunks:
                writes.upsert_tasks(self.link, self.board_id, token, chunk, as_of)
        return True

    def _pump(self, result: SyncResult, deadline: float | None) -> None:
        """Send batches until caught up (or stopping)."""
        assert self.token is not None
        while not self._stop and (deadline is None or time.monotonic() < deadline):
            b = outbox.read(self.board, self.acked, self.batch)
            if not b.events:
                return
            applied = writes.apply_batch(self.link, self.board_id, self.token, b.events, b.tasks, b.deleted, b.as_of)
            self._refreshed = time.monotonic()
            self.acked = applied.acked
            result.sent += len(b.events)
            result.inserted += applied.inserted
            result.batches += 1
            self._checkpoint(force=False)
            if len(b.events) < self.batch:
                return

    def _refresh_if_due(self) -> None:
        if self.token is not None and time.monotonic() - self._refreshed >= lease.REFRESH_S:
            writes.refresh_lease(self.link, self.board_id, self.token)
            self._refreshed = time.monotonic()
            if self._last_error is None:
                sync_status.record_ok(self.board.paths, self.hub, self.acked)

    def _checkpoint(self, *, force: bool) -> None:
        """Write the local checkpoint (the hub's ack); count consecutive failures and stop after too many."""
        if not self._acked_known or self.acked == self.local_mark:
            return  # nothing new, or the hub was never reached in this run (our 0 is no knowledge)
        if not force and time.monotonic() - self._mark_at < CHECKPOINT_EVERY_S:
            return
        try:
            outbox.write_checkpoint(self.board, self.hub, self.acked)
        except StorageError as exc:
            self._checkpoint_failures += 1
            self.log(f"checkpoint write failed ({self._checkpoint_failures}/{CHECKPOINT_FAILURES_MAX}): {exc.message}")
            self._record_error(f"checkpoint write failed: {exc.message}")
            if self._checkpoint_failures >= CHECKPOINT_FAILURES_MAX:
                raise CheckpointFailing(
                    f"sync of board {self.board.slug} to {self.hub} stopped: {self._checkpoint_failures} consecutive "
                    f"checkpoint writes failed ({exc.message}); fix the board (see: hermes kanban doctor), then "
                    "run the sync again: it resumes from the hub's ack") from exc
            return
        if self._checkpoint_failures and self._failing_since is None:
            self._last_error = None  # the board takes checkpoints again; the next status write clears the error
        self.local_mark, self._mark_at, self._checkpoint_failures = self.acked, time.monotonic(), 0

    def _failing(self, exc: StorageError) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            if self._bell is not None:  # --follow retries: say so once (with --once the error is the exit line)
                self.log(f"error: {exc.message} (retrying)")
        self._record_error(exc.message)

    def _record_error(self, message: str) -> None:
        self._last_error = message
        sync_status.record_error(self.board.paths, self.hub, message, self._checkpoint_failures)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            self.log(f"hub {self.hub} back after {time.monotonic() - self._failing_since:.1f}s; caught up to event "
                     f"{self.acked}")
            self._failing_since = None
            self._last_error = None
            sync_status.record_ok(self.board.paths, self.hub, self.acked)

    def _finish(self, result: SyncResult, started: float) -> None:
        """At exit, whatever the reason: the checkpoint, the lease released, the status for doctor."""
        try:
            self._checkpoint(force=True)
        except CheckpointFailing:
            pass  # already recorded and raised by the loop, or the last of several failures: the exit code says it
        if self.token is not None:
            try:
                writes.free_lease(self.link, self.board_id, self.token)
            except (HubError, StorageError) as exc:
                # The lease then expires by the grace (or is taken over at once from this host, our pid being gone).
                self.log(f"could not release the sync lease: {exc.message}")
            self.token = None
        if self._last_error is None and result.status != "skipped":
            sync_status.record_ok(self.board.paths, self.hub, self.acked)
        self.link.close()
        if self._bell is not None:
            self._bell.close()
            self._bell = None
        result.acked = self.acked if self._acked_known else None
        result.pending = sync_sql.backlog(self.board.db, self.acked if self._acked_known else self.local_mark)[0]
        result.seconds = round(time.monotonic() - started, 3)
