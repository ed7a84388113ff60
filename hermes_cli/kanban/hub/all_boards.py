"""`sync --all-boards`: one sync process per board, so one slow, locked or failing board never starves the others.

Each board runs `hermes kanban sync --board SLUG --json ...` in its own process and session; the hub URL goes
through the environment (HERMES_KANBAN_HUB_URL), never the command line, where `ps` would show its password.
SIGINT/SIGTERM are forwarded (each board stops gracefully, keeping its checkpoint). With --follow a board whose sync
exited is started again after `retry_s`, and new boards are picked up; with --once each board runs once and the exit
code is the worst of theirs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ..core.hubconf import HUB_URL_ENV
from ..core.paths import list_slugs

#: how often --follow looks for new boards and restarts exited ones
ENUMERATE_EVERY_S = 5.0


@dataclass
class BoardSync:
    slug: str
    starts: int = 0
    exit_code: int | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"board": self.slug, "exit_code": self.exit_code, "starts": self.starts, "result": self.result,
                "error": self.error}


@dataclass
class AllBoards:
    boards: dict[str, BoardSync] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return max((b.exit_code or 0 for b in self.boards.values()), default=0)

    def as_dict(self) -> dict[str, Any]:
        return {"all_boards": True, "boards": [self.boards[s].as_dict() for s in sorted(self.boards)],
                "exit_code": self.exit_code}

    def lines(self) -> list[str]:
        if not self.boards:
            return ["no boards (see: hermes kanban boards create SLUG)"]
        out = []
        for s in sorted(self.boards):
            b = self.boards[s]
            if b.error:
                out.append(f"board {s}: error: {b.error} (exit {b.exit_code})")
            elif b.result:
                out.append(f"board {s}: {b.result.get('status')} ({b.result.get('reason')}): sent "
                           f"{b.result.get('sent')}, pending {b.result.get('pending')}")
            else:
                out.append(f"board {s}: exit {b.exit_code}, no summary")
        return out


def _parse(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.decode("utf-8", "replace").splitlines()):
        if line.strip():
            try:
                data = json.loads(line)
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def sync_all_boards(url: str, args: list[str], *, follow: bool, timeout: float | None, retry_s: float = 10.0,
                    log: Callable[[str], None] | None = None) -> AllBoards:
    say = log or (lambda _m: None)
    result = AllBoards()
    live: dict[str, subprocess.Popen[bytes]] = {}
    outputs: dict[str, bytes] = {}
    next_start: dict[str, float] = {}
    stopping = threading.Event()
    env = {k: v for k, v in os.environ.items() if k not in ("HERMES_KANBAN_DB", "HERMES_KANBAN_BOARD")}
    env[HUB_URL_ENV] = url

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        for p in list(live.values()):
            try:
                p.send_signal(signum)
            except ProcessLookupError:
                continue  # it just exited

    def start(slug: str) -> None:
        argv = [sys.executable, "-m", "hermes_cli.main", "kanban", "sync", "--board", slug, "--json", *args]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, start_new_session=True)
        live[slug] = p
        run = result.boards.setdefault(slug, BoardSync(slug))
        run.starts += 1

        def read() -> None:
            assert p.stdout is not None
            outputs[slug] = p.stdout.read()
            p.wait()

        threading.Thread(target=read, name=f"sync-{slug}", daemon=True).start()
        say(f"board {slug}: sync started (pid {p.pid})")

    def collect(slug: str, p: subprocess.Popen[bytes]) -> None:
        run = result.boards[slug]
        run.exit_code = p.returncode
        data = _parse(outputs.pop(slug, b""))
        run.result, run.error = None, None
        if data is not None and isinstance(data.get("error"), dict):
            run.error = str(data["error"].get("message"))
        elif data is not None:
            run.result = data
        elif p.returncode:
            run.error = f"sync exited {p.returncode} without a summary"
        if run.error:
            say(f"board {slug}: {run.error} (exit {p.returncode})")

    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    stop_at = None if timeout is None else time.monotonic() + timeout
    try:
        for slug in list_slugs():
            start(slug)
        next_enum = time.monotonic() + ENUMERATE_EVERY_S
        while True:
            now = time.monotonic()
            for slug, p in list(live.items()):
                if p.poll() is not None and slug in outputs:
                    del live[slug]
                    collect(slug, p)
                    next_start[slug] = now + retry_s
            done = not follow or stopping.is_set() or (stop_at is not None and now >= stop_at)
            if done and not live:
                break
            if not done and now >= next_enum:
                for slug in list_slugs():
                    if slug not in live and now >= next_start.get(slug, 0.0):
                        start(slug)
                next_enum = now + ENUMERATE_EVERY_S
            stopping.wait(0.1)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return result
