"""Helpers for the dispatcher tests: real worker processes, real dispatchers, real signals.

Every wait is bounded (`wait_for`), and every process a test starts is ended at teardown by its pid, checked
against its start time (`reaper`), so a failing test never leaves a worker or a dispatcher behind.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from hermes_cli.kanban import Board, HermesError
from hermes_cli.kanban.dispatch.result import DispatchResult
from hermes_cli.kanban.dispatch.supervisor import Dispatcher
from hermes_cli.kanban.domain.config import load_settings

T = TypeVar("T")
PY = sys.executable
HERMES = str(Path(sys.executable).with_name("hermes"))
#: fast settings for tests: short leases and graces so takeovers and kills happen within a second or two
FAST = {"poll_interval": "300ms", "kill_grace": "500ms", "lease_grace": "2s", "worker_ttl": "3s"}


def worker(action: str, *args: str) -> str:
    """A `--command` running one of the demo workers (hermes_cli/kanban/demo/workers.py)."""
    return shlex.join([PY, "-m", "hermes_cli.kanban.demo.workers", action, *args])


def pycmd(code: str, *args: str) -> str:
    """A `--command` running a Python snippet (argv after it may use placeholders)."""
    return shlex.join([PY, "-c", code, *args])


def configure(board: Board, *, fast: bool = True, **settings: Any) -> None:
    """Write the board's config.toml [dispatch] table: the FAST settings (unless fast=False), then `settings`."""
    lines = ["[dispatch]"]
    for key, value in {**(FAST if fast else {}), **settings}.items():
        lines.append(f"{key} = {json.dumps(value)}")
    board.paths.config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")


def wait_for(pred: Callable[[], T], *, timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `pred` until it returns something truthy; fail the test after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def dispatch(board: Board, *, log: list[str] | None = None, timeout: float = 30.0, **kw: Any) -> DispatchResult:
    """Run the dispatcher in this process (until idle by default) with the board's config and `kw` flags."""
    flags = {k: kw.pop(k) for k in list(kw) if k in ("max_spawn", "failure_limit", "max_runtime_default")}
    kw.setdefault("until_idle", not kw.get("once"))
    lines = log if log is not None else []
    d = Dispatcher(board, load_settings(board.paths, flags), timeout=timeout, log=lines.append, **kw)
    return d.run()


@dataclass
class Proc:
    """A dispatcher (or any process) started by a test; stderr goes to a file so it can never fill a pipe."""

    popen: subprocess.Popen[str]
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def finish(self, timeout: float = 30.0) -> tuple[int, Any, str]:
        out, _ = self.popen.communicate(timeout=timeout)
        err = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        data: Any = None
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if lines:
            try:
                data = json.loads(lines[-1])
            except ValueError:
                data = lines[-1]
        return self.popen.returncode, data, err

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


class Reaper:
    """Remembers (pid, start time) of processes a test started and kills what is left of them at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.owned: list[tuple[int, float]] = []
        self.boards: list[tuple[str, str]] = []
        self.procs: list[Proc] = []
        self._n = 0

    def own(self, pid: int) -> None:
        try:
            self.owned.append((pid, psutil.Process(pid).create_time()))
        except psutil.NoSuchProcess:
            return  # already gone: nothing to clean up

    def watch_board(self, board: Board) -> None:
        """At teardown, also kill the workers recorded in this board's open runs (started by our dispatchers)."""
        self.boards.append((board.slug, str(board.paths.db)))

    def hermes(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        """Start `hermes <args>` (e.g. a dispatcher daemon) in the background."""
        self._n += 1
        err = self.tmp / f"proc-{self._n}.stderr"
        with open(err, "w", encoding="utf-8") as ferr:
            popen = subprocess.Popen([HERMES, *args], stdout=subprocess.PIPE, stderr=ferr, text=True,
                                     env={**os.environ, **(env or {})})
        self.own(popen.pid)
        proc = Proc(popen, err)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for slug, db in self.boards:
            try:
                with Board.open(slug, db_path=db) as board:
                    for run in board.open_runs():
                        if run.pid and run.pid_create_time:
                            self.owned.append((run.pid, run.pid_create_time))
            except HermesError as exc:  # a board a test corrupted on purpose: report it, keep cleaning up
                print(f"reaper: could not read open runs: {exc}")
        for pid, started in self.owned:
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - started) > 0.01:
                    continue  # the pid now belongs to another process: never signal it
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.killpg(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        p.send_signal(sig)
            except psutil.NoSuchProcess:
                continue
        for proc in self.procs:  # reap them and close their pipes (killed above if they were still running)
            proc.popen.communicate(timeout=30)


@pytest.fixture
def reaper(tmp_path: Path) -> Iterator[Reaper]:
    r = Reaper(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture
def board(reaper: Reaper) -> Iterator[Board]:
    """The default board (in the test's HERMES_HOME) with fast dispatcher settings."""
    b = Board.open()
    configure(b, **FAST)
    reaper.watch_board(b)
    try:
        yield b
    finally:
        b.close()


def runs_of(board: Board, task_id: str) -> list[Any]:
    return list(board.detail(task_id, events=0).runs)


def started_run(board: Board, task_id: str) -> Any:
    """The task's latest run once its worker's pid is recorded, else None (for wait_for)."""
    runs = runs_of(board, task_id)
    return runs[-1] if runs and runs[-1].pid else None


def outcomes(board: Board, task_id: str) -> list[str]:
    return [str(r.outcome) if r.outcome else "open" for r in runs_of(board, task_id)]


def fd_count(pid: int | None = None) -> int:
    """Open file descriptors of a process (this one by default): for the fd-leak checks."""
    return len(os.listdir(f"/proc/{pid or os.getpid()}/fd"))


def pidfds() -> int:
    """How many pidfds this process holds (what the dispatcher opens per supervised worker)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        except FileNotFoundError:
            continue  # the fd of the listdir itself, closed by now
    return n


def alive(pid: int, started: float | None) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and (started is None or abs(p.create_time() - started) < 0.01)
    except psutil.NoSuchProcess:
        return False
