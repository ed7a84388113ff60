"""`dispatch --all-boards`: one dispatcher process per board, supervised by this one.

Each board runs `hermes kanban dispatch --board SLUG --json ...` in its own process (and its own session), so a
corrupt, locked or slow board, or one whose dispatcher crashes, never stops the others: its exit is recorded and,
when running as a daemon, it is started again after `board_retry` seconds (new boards are picked up the same way).
Signals are forwarded one for one: the first SIGINT/SIGTERM makes every board stop gracefully, a second one stops
them now. With --once/--until-idle every board runs once and the exit code is the worst of theirs.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ..core.paths import list_slugs
from .wakeups import WakePipe

#: how often the daemon looks for new boards
ENUMERATE_EVERY_S = 5.0
#: after the boards' own --timeout, how long they get to stop before they are told twice
STOP_GRACE_S = 30.0


@dataclass
class BoardRun:
    slug: str
    starts: int = 0
    exit_code: int | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"board": self.slug, "exit_code": self.exit_code, "starts": self.starts, "result": self.result,
                "error": self.error}

    def human(self) -> str:
        if self.error is not None:
            return f"board {self.slug}: error: {self.error} (exit {self.exit_code})"
        if self.result is None:
            return f"board {self.slug}: exit {self.exit_code}, no summary"
        if self.result.get("skipped"):
            return f"board {self.slug}: {self.result.get('message')}"
        r = self.result
        return (f"board {self.slug}: stopped ({r.get('reason')}): spawned {r.get('spawned')}, completed "
                f"{r.get('completed')}, reported {r.get('reported')}, crashed {r.get('crashed')}, timed out "
                f"{r.get('timed_out')}, gave up {r.get('gave_up')}")


@dataclass
class AllBoardsResult:
    boards: dict[str, BoardRun] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return max((b.exit_code or 0 for b in self.boards.values()), default=0)

    def as_dict(self) -> dict[str, Any]:
        return {"all_boards": True, "boards": [self.boards[s].as_dict() for s in sorted(self.boards)],
                "exit_code": self.exit_code}

    def lines(self) -> list[str]:
        """The text summary, one line per board (a renderer may escape each line: they quote boards' errors)."""
        if not self.boards:
            return ["no boards (see: hermes kanban boards create SLUG)"]
        return [self.boards[s].human() for s in sorted(self.boards)]


@dataclass
class _Live:
    slug: str
    popen: subprocess.Popen[bytes]
    out: list[bytes] = field(default_factory=list)
    reader: threading.Thread | None = None
    #: we forwarded a stop signal to it (so an exit without a summary may be our own doing)
    signalled: bool = False


def _parse(out: bytes) -> dict[str, Any] | None:
    lines = [ln for ln in out.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return None
    try:
        data = json.loads(lines[-1])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _never_began(data: dict[str, Any] | None) -> bool:
    """Whether a board's dispatcher printed nothing, or only hermes_cli.main's answer to a signal that arrived before
    the dispatcher ran (exit 143/130, `{"error": {"code": "terminated"|"aborted"}}`)."""
    if data is None:
        return True
    error = data.get("error") if set(data) == {"error"} else None
    return isinstance(error, dict) and error.get("code") in ("terminated", "aborted")


def run_all_boards(
    args: list[str],
    *,
    daemon: bool,
    timeout: float | None,
    board_retry: float,
    verb: str = "dispatch",
    log: Callable[[str], None] | None = None,
) -> AllBoardsResult:
    """Dispatch every board under $HERMES_HOME, each with `hermes kanban VERB --board SLUG --json *args` (VERB:
    `dispatch`, one pass each, or `daemon`)."""
    say = log or (lambda _m: None)
    result = AllBoardsResult()
    live: dict[str, _Live] = {}
    next_start: dict[str, float] = {}
    signals = [0]
    wakeups = WakePipe()
    wakeups.open(signals=False)
    env = {k: v for k, v in os.environ.items() if k not in ("HERMES_KANBAN_DB", "HERMES_KANBAN_BOARD")}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals[0] += 1
        for lv in list(live.values()):
            try:
                lv.popen.send_signal(signum)
                lv.signalled = True
            except ProcessLookupError:
                continue  # it just exited; its reader thread reports it
        wakeups.ring()

    def start(slug: str) -> None:
        argv = [sys.executable, "-m", "hermes_cli.main", "kanban", verb, "--board", slug, "--json", *args]
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
                                 start_new_session=True)
        lv = _Live(slug, popen)

        def read() -> None:
            assert popen.stdout is not None
            lv.out.append(popen.stdout.read())
            popen.wait()
            wakeups.ring()  # a no-op once the main loop has finished and closed the pipe

        lv.reader = threading.Thread(target=read, name=f"board-{slug}", daemon=True)
        lv.reader.start()
        live[slug] = lv
        run = result.boards.setdefault(slug, BoardRun(slug))
        run.starts += 1
        say(f"board {slug}: dispatcher started (pid {popen.pid})")

    def collect(lv: _Live) -> None:
        assert lv.popen.stdout is not None
        lv.popen.stdout.close()
        run = result.boards[lv.slug]
        data = _parse(b"".join(lv.out))
        if _never_began(data) and lv.signalled and run.starts > 1 and run.exit_code is not None:
            # A restart that the signal we forwarded stopped while its interpreter was still starting (before it
            # could install its handlers: no output, or the CLI's own "terminated"/"aborted" answer to a signal
            # during start-up): it never ran, so the board's outcome is still its previous run's.
            say(f"board {lv.slug}: restart stopped by the signal before it began; keeping the previous outcome")
            return
        run.exit_code = lv.popen.returncode
        run.result, run.error = None, None
        if data is not None and set(data) == {"error"} and isinstance(data["error"], dict):
            run.error = str(data["error"].get("message"))
        elif data is not None:
            run.result = data
            if data.get("error"):
                run.error = str(data["error"].get("message"))
        elif run.exit_code:
            run.error = f"dispatcher exited {run.exit_code} without a summary"
        if run.error is not None:
            later = f"; retrying in {board_retry:g}s" if daemon and not signals[0] else ""
            say(f"board {lv.slug}: {run.error} (exit {run.exit_code}){later}")

    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    stop_at = None if timeout is None else time.time() + timeout
    deadline = None if stop_at is None else stop_at + STOP_GRACE_S
    told_twice = False
    try:
        slugs = list_slugs()
        if not slugs:
            say("no boards to dispatch (see: hermes kanban boards create SLUG)")
        for slug in slugs:
            start(slug)
        next_enum = time.time() + ENUMERATE_EVERY_S
        while True:
            now = time.time()
            for slug, lv in list(live.items()):
                if lv.reader is not None and not lv.reader.is_alive():
                    del live[slug]
                    collect(lv)
                    next_start[slug] = now + board_retry
            # Not restarting any more: one run each (--once/--until-idle), a signal, or the --timeout passed (the
            # boards stop themselves at their own --timeout).
            stopping = not daemon or signals[0] > 0 or (stop_at is not None and now >= stop_at)
            if stopping and not live:
                break
            if not stopping and (now >= next_enum or any(t <= now for s, t in next_start.items() if s not in live)):
                for slug in list_slugs():
                    if slug not in live and now >= next_start.get(slug, 0.0):
                        start(slug)
                next_enum = now + ENUMERATE_EVERY_S
            if deadline is not None and now >= deadline and live and not told_twice:
                told_twice = True
                say(f"boards still running {STOP_GRACE_S:g}s after --timeout: stopping them now")
                for lv in live.values():
                    for _ in range(2):
                        lv.popen.send_signal(signal.SIGTERM)
            wake_at = [next_enum] + [t for s, t in next_start.items() if s not in live]
            if stop_at is not None:
                wake_at.append(stop_at if now < stop_at else (deadline or now))
            pause = 1.0 if stopping else max(0.0, min(wake_at) - now)
            select.select([wakeups.read_fd], [], [], min(pause, 1.0))
            wakeups.drain()  # the wake-ups only say "look again"
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        wakeups.close()
    return result
