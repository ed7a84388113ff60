"""Wake-ups for a PostgreSQL board: LISTEN on a dedicated connection, turned into the same "look now" pipe a FIFO
doorbell gives (live/doorbell.py), so the dispatcher's poll(), `events --follow` and the TUI's watcher wait on one fd
whatever the engine. Imported only for PostgreSQL boards (live/bells.py), so psycopg never loads for SQLite.

Every write that inserted an event sends `pg_notify(channel_name(slug), '')`, delivered at COMMIT
(store/pg/database.py). A thread owns the listening connection: it waits (poll) on the connection's socket and a stop
pipe, reads the notifications (`Connection.notifies(timeout=0)`) and writes one byte into the wake pipe the caller
polls. The events cursor stays the truth: a notification lost (a connection dropped, a server restart, a pooler) costs
latency, never an event, because every reader also re-reads on a bounded fallback poll, and the thread rings once
after each reconnect (events committed while it was not listening are caught up).

- LISTEN is done before the constructor returns: a reader that reads "up to here" after opening its bell cannot miss
  a commit between the two.
- Behind a transaction-mode pooler (PgBouncer) LISTEN silently does nothing. The thread probes once: a NOTIFY with a
  random payload sent from another connection must come back within PROBE_S, and `pg_listening_channels()` must name
  the channel. If not, it warns once and stops listening: the caller's fallback poll is what wakes it from then on.
  `HERMES_KANBAN_PG_LISTEN=0` turns LISTEN off (poll only, no probe, no warning).
- A silently dropped connection is found by TCP keepalives (store/pg/database.open_connection) and by a `SELECT 1`
  every IDLE_CHECK_S while idle; then the thread reconnects with backoff (at most RECONNECT_MAX_S apart).
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from ..core.errors import HermesError
from ..store.pg.database import channel_name, one_line, open_connection, redact

#: how long the pooler probe waits for its own notification to come back
PROBE_S = 2.0
#: while idle, the listening connection is checked with `SELECT 1` this often (a silent drop is found then)
IDLE_CHECK_S = 30.0
#: reconnect backoff: first retry after RECONNECT_MIN_S, doubling up to RECONNECT_MAX_S
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 10.0
ENV = "HERMES_KANBAN_PG_LISTEN"


def listen_enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "no", "false")


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class PgBell:
    """A reader's end on a PostgreSQL board, with the interface of live.doorbell.Doorbell: `fileno()` is a pipe
    that becomes readable when the board changed (or when poked), `wait`, `drain`, `poke`, `repair`, `close`.

    `mode` is "listen" while notifications arrive, "poll" when LISTEN does not work here (pooler, or turned off).
    """

    def __init__(self, url: str, slug: str, name: str, *, warn: Callable[[str], None] | None = None,
                 probe: bool = True) -> None:
        self.url = url
        self.channel = channel_name(slug)
        self.name = name
        self._warn = warn or _stderr_warning
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        #: notifications received (the probe's excluded): for tests and `doctor`-style questions
        self.received = 0
        self.reconnects = 0
        self.mode = "listen" if listen_enabled() else "poll"
        #: set once the pooler probe has decided (or was skipped): `mode` is final from then on, barring failures
        self.probed = threading.Event()
        self._thread: threading.Thread | None = None
        if self.mode == "poll":
            self.probed.set()
            return
        try:
            self._conn = self._listen()
        except HermesError:
            self._conn = None  # unreachable now: the thread keeps trying, the caller's fallback poll covers it
        self._thread = threading.Thread(target=self._main, args=(probe,), name=f"pg-listen-{name}", daemon=True)
        self._thread.start()

    # -- the caller's side (Doorbell's interface) --------------------------------------------------------------------
    def fileno(self) -> int:
        return self._rfd

    def wait(self, timeout: float | None) -> bool:
        """Block until notified (or poked) or `timeout` seconds pass. Returns whether it was woken."""
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN)
        if poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
            self.drain()
            return True
        return False

    def drain(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            return
        except OSError:
            return  # closed meanwhile (a stop): nothing to drain

    def poke(self) -> None:
        """Wake a waiter; safe from another thread and from a signal handler (one non-blocking write)."""
        self._ring()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (None while not connected)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def healthy(self) -> bool:
        return self.mode == "poll" or (self._thread is not None and self._thread.is_alive())

    def repair(self) -> bool:
        """Nothing to re-publish (the thread reconnects by itself); kept for Doorbell's interface."""
        return False

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            os.write(self._stop_w, b"\0")
        except OSError:
            pass  # the stop pipe is full: the thread is being told to stop already
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._thread is None or not self._thread.is_alive():
            # Only once the thread is gone: it may still use the connection and the pipes.
            self._drop()
            for fd in (self._rfd, self._wfd, self._stop_r, self._stop_w):
                os.close(fd)

    def __enter__(self) -> PgBell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the thread --------------------------------------------------------------------------------------------------
    def _ring(self) -> None:
        try:
            os.write(self._wfd, b"\x01")
        except BlockingIOError:
            return  # full of rings: the waiter wakes anyway
        except OSError:
            return  # closed (a stop raced with a notification): nobody is waiting any more

    def _listen(self) -> psycopg.Connection[Any]:
        conn = open_connection(self.url)
        try:
            conn.execute(f'LISTEN "{self.channel}"')
        except psycopg.Error:
            conn.close()
            raise
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass  # a connection the server already dropped: closing it has nothing left to do

    def _main(self, probe: bool) -> None:
        try:
            if probe and self._conn is not None and not self._probe():
                self._drop()
                self.mode = "poll"
                self._warn(f"LISTEN/NOTIFY does not work through {redact(self.url)} (a transaction-mode pooler?): "
                           f"{self.name} falls back to polling the board (set {ENV}=0 to say so and skip the probe)")
                return
            self.probed.set()
            self._serve()
        except (psycopg.Error, HermesError, OSError) as exc:
            # Never silent, never fatal: the caller's fallback poll keeps it correct, only slower.
            self.mode = "poll"
            self._warn(f"listening for board changes stopped ({one_line(exc)}); {self.name} falls back to polling")
            self._ring()
        finally:
            self.probed.set()

    def _probe(self) -> bool:
        """Whether a notification sent from another connection reaches ours (see the module docstring)."""
        assert self._conn is not None
        token = "probe:" + os.urandom(6).hex()
        try:
            channels = [r[0] for r in self._conn.execute("SELECT pg_listening_channels()").fetchall()]
            if self.channel not in channels:
                return False
            with open_connection(self.url) as other:
                other.execute("SELECT pg_notify(%s, %s)", (self.channel, token))
            deadline = time.monotonic() + PROBE_S
            while (left := deadline - time.monotonic()) > 0:
                for n in self._conn.notifies(timeout=left):
                    if n.payload == token:
                        return True
                    self.received += 1
                    self._ring()  # a real change arrived during the probe
        except (psycopg.Error, HermesError):
            # Unreachable during the probe: say nothing about poolers; the serve loop reconnects and listens.
            self._drop()
            return True
        return False

    def _serve(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._closed.is_set():
            if self._conn is None:
                try:
                    self._conn = self._listen()
                except (HermesError, psycopg.Error):
                    if self._sleep(delay):
                        return
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
                delay = RECONNECT_MIN_S
                self.reconnects += 1
                self._ring()  # catch up: events committed while nobody here was listening
            try:
                self._pump(self._conn)
            except psycopg.Error:
                # Dropped (restart, pg_terminate_backend, partition): wake the reader to catch up, then reconnect.
                self._drop()
                self._ring()

    def _sleep(self, seconds: float) -> bool:
        """Wait on the stop pipe; True when stopping."""
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        poller.poll(int(seconds * 1000))
        return self._closed.is_set()

    def _pump(self, conn: psycopg.Connection[Any]) -> None:
        """Wait for notifications until stopped; raises psycopg.Error when the connection fails."""
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        poller.register(self._stop_r, select.POLLIN)
        idle_since = time.monotonic()
        while not self._closed.is_set():
            ready = poller.poll(int(IDLE_CHECK_S * 1000))
            if self._closed.is_set():
                return
            if not ready:
                if time.monotonic() - idle_since >= IDLE_CHECK_S:
                    conn.execute("SELECT 1")  # a silent drop shows here; notifications meanwhile are kept
                    idle_since = time.monotonic()
                    for _ in conn.notifies(timeout=0):
                        self.received += 1
                        self._ring()
                continue
            got = 0
            for _ in conn.notifies(timeout=0):
                got += 1
            if got:
                self.received += got
                self._ring()
            idle_since = time.monotonic()
            if conn.broken or conn.closed:
                raise psycopg.OperationalError("the listening connection was closed")
