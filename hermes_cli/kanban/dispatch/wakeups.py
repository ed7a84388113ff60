"""Signals and wake-ups: what ends the dispatcher's waits.

The dispatcher's main thread sleeps in poll() on a self-pipe (WakePipe), next to the doorbell FIFO and the workers'
pidfds. The heartbeat and backup threads ring the pipe; the stop signals ring it through `signal.set_wakeup_fd`.
StopSignals only counts the signals (the first stops the dispatcher gracefully, the second now): the main thread
reads the count, since printing from a handler could re-enter a buffered write the main thread is in the middle of.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

#: the signals that stop the dispatcher (the first gracefully, the second now)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def block_stop_signals() -> None:
    """In a helper thread (heartbeat, backups): leave the stop signals (and SIGCHLD) to the main thread, so they
    never interrupt this thread's SQLite and file calls."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {*STOP_SIGNALS, signal.SIGCHLD})


def close_fd(fd: int) -> None:
    """Close `fd` unless it is -1 (not opened: no pidfd on this kernel, or already closed)."""
    if fd >= 0:
        os.close(fd)


class StopSignals:
    """SIGINT/SIGTERM/SIGHUP while the dispatcher runs, counted (see the module docstring)."""

    def __init__(self, on_installed: Callable[[], None] | None = None) -> None:
        #: called once the handlers are installed (the CLI's start-up handlers stand down then)
        self._on_installed = on_installed
        self.count = 0
        self.last: int = signal.SIGTERM  # the handler receives a plain int signum
        self._noted = 0
        self._old_handlers: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._old_handlers)

    @property
    def last_name(self) -> str:
        return signal.Signals(self.last).name

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded in a thread (tests): the host program owns signals
        for sig in STOP_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        if self._on_installed is not None:
            self._on_installed()

    def restore(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers.clear()

    def take_new(self) -> bool:
        """Whether signals arrived since the last call (so each is announced once)."""
        if self.count == self._noted:
            return False
        self._noted = self.count
        return True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only count: printing from a handler can re-enter a buffered write the main thread is in the middle of.
        self.count += 1
        self.last = signum


class WakePipe:
    """The self-pipe the main thread polls. `ring` is safe from any thread, also after `close` (then a no-op)."""

    def __init__(self) -> None:
        self.read_fd = -1
        self._write_fd = -1
        self._old_wakeup_fd: int | None = None
        # The heartbeat and backup threads may still ring while the main thread closes: never write to a reused fd.
        self._lock = threading.Lock()

    def open(self, *, signals: bool) -> None:
        """Open the pipe; with `signals` (the handlers are ours), signals ring it too."""
        self.read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if signals:
            self._old_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)

    def close(self) -> None:
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None
        with self._lock:
            fds, self.read_fd, self._write_fd = (self.read_fd, self._write_fd), -1, -1
        for fd in fds:
            close_fd(fd)

    def ring(self) -> None:
        with self._lock:
            if self._write_fd < 0:
                return
            try:
                os.write(self._write_fd, b"\0")
            except BlockingIOError:
                return  # the pipe is full of wake-ups: the main loop wakes anyway

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            return

    def poller(self) -> select.poll:
        """A poll object watching the pipe (the caller adds its own fds)."""
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        return poller
