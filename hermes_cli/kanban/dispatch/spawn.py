"""Starting a worker process per the worker contract (DESIGN.md, Worker contract).

- argv: `shlex.split` of the task's command (or the board default), then `{task_id}`, `{run_id}`, `{board}`,
  `{workspace}` and `{title}` substituted inside single arguments. Never a shell: task text cannot become code.
- environment: the dispatcher's, plus HERMES_KANBAN_DB, _BOARD, _TASK, _RUN_ID and _WORKSPACE, and HERMES_PROFILE
  (the task's assignee) when the task has one.
- a new session (its own process group, so a timeout can kill the whole group, and a Ctrl-C in the dispatcher's
  terminal does not reach it), stdin from /dev/null, stdout+stderr appended to `<board>/logs/<task>.log` (rotated
  at spawn time), cwd the task's workspace (domain/workspaces.py: its scratch directory, kept across retries, by
  default).
- exec'd by subprocess (fork+exec, close_fds): no database connection crosses into the child.

A one-pass `dispatch` starts each worker under a watcher (`watch`: watch.py, a process of its own that starts the
worker exactly so, records how it ends and keeps its lease while no dispatcher runs); the watcher holds a flock on
`<board>/watchers/<run>.lock` while it lives, and a dispatcher leaves a run whose watcher holds it alone
(`watcher_of`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import select
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InvalidValue
from ..core.models import iso
from ..core.paths import BoardPaths, ensure_private_dir

PLACEHOLDER_RE = re.compile(r"\{(task_id|run_id|board|workspace|title)\}")
CONTRACT_ENV = ("HERMES_KANBAN_DB", "HERMES_KANBAN_BOARD", "HERMES_KANBAN_TASK", "HERMES_KANBAN_RUN_ID",
                "HERMES_KANBAN_WORKSPACE", "HERMES_KANBAN_BRANCH", "HERMES_KANBAN_MODEL", "HERMES_KANBAN_PROVIDER")


def build_argv(command: str, values: Mapping[str, str]) -> list[str]:
    """Split `command` like a POSIX shell would (quotes only: no expansion, no operators), then substitute the
    placeholders inside each argument. Unknown `{...}` stays as written (JSON arguments survive)."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InvalidValue(f"invalid worker command {command!r}: {exc}") from None
    if not argv:
        raise InvalidValue("invalid worker command: it is empty")
    return [PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], arg) for arg in argv]


def worker_env(base: Mapping[str, str], *, db: Path, board: str, task_id: str, run_id: int,
               workspace: Path, profile: str | None = None, branch: str | None = None,
               model: Mapping[str, str | None] | None = None) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in CONTRACT_ENV}
    if model is not None:  # the task's model override (set-model): for the worker's command to use
        env["HERMES_KANBAN_MODEL"] = str(model["model"])
        if model.get("provider"):
            env["HERMES_KANBAN_PROVIDER"] = str(model["provider"])
    if branch is not None:
        env["HERMES_KANBAN_BRANCH"] = branch  # a worktree workspace's branch, as hermes-agent sets it
    if profile is not None:
        # the task's assignee, as hermes-agent sets it: `list --mine` and `create` (created_by) inside the worker
        env["HERMES_PROFILE"] = profile
    env.update(
        HERMES_KANBAN_DB=str(db),
        HERMES_KANBAN_BOARD=board,
        HERMES_KANBAN_TASK=task_id,
        HERMES_KANBAN_RUN_ID=str(run_id),
        HERMES_KANBAN_WORKSPACE=str(workspace),
    )
    return env


def workspace_for(paths: BoardPaths, task_id: str) -> Path:
    """`<board>/workspaces/<task>/`, 0700; kept across retries so a retry can pick up partial work."""
    ensure_private_dir(paths.workspaces_dir)
    ws = paths.workspaces_dir / task_id
    ensure_private_dir(ws)
    return ws


def log_path(paths: BoardPaths, task_id: str) -> Path:
    return paths.logs_dir / f"{task_id}.log"


# Why not logging.handlers.RotatingFileHandler (issue 10 asks for the standard library's rotating handler unless we
# show why not): a task's log is written by the worker process itself, through the stdout/stderr fd it inherits
# (Popen(stdout=fd, stderr=fd)), never through a logging.Handler in this process. RotatingFileHandler decides to roll
# over in emit(), for a record it is about to write, and only for its own stream; the worker's bytes never pass through
# it, so it could neither see the size grow nor rotate at a safe moment (renaming under a live writer leaves the worker
# appending to `<task>.log.1`). The one safe moment is between runs, before the next worker gets its fd: that is
# `rotate` below, called by `open_log`. Its doRollover() alone would not do either: it opens the new file with the
# process umask and follows symlinks (task logs are 0600 and opened O_NOFOLLOW), and with backupCount=0 it never
# rotates at all, where log_backups = 0 here means "drop the old log" (the file would otherwise grow without bound).
def rotate(path: Path, max_bytes: int, backups: int) -> bool:
    """If `path` has reached `max_bytes`, shift `path.N-1 -> path.N ... path -> path.1` (the oldest falls off).
    Only the dispatcher rotates, and only before starting a task's next worker, so no writer is mid-line."""
    try:
        size = os.lstat(path).st_size
    except FileNotFoundError:
        return False
    if size < max_bytes:
        return False
    if backups <= 0:
        os.unlink(path)
        return True
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if os.path.lexists(older):
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))
    return True


def open_log(path: Path, *, max_bytes: int, backups: int) -> int:
    """Rotate if due, then open for appending (0600, never through a symlink). The caller closes the fd."""
    ensure_private_dir(path.parent)
    rotate(path, max_bytes, backups)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def append_log_line(path: Path, line: str) -> None:
    """The dispatcher's own notes in a task's log (start and end of each run)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return  # a missing or refused log only loses a note; the run's outcome is in the database
    try:
        os.write(fd, f"--- {iso(time.time())} {line}\n".encode("utf-8", "replace"))
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Started:
    #: the worker (or, watched, its watcher: our child, which started the worker)
    popen: subprocess.Popen[bytes]
    argv: tuple[str, ...]
    workspace: Path
    log: Path
    #: the worker's pid and start time (None: not read yet; the caller reads it from our own child)
    pid: int = 0
    create_time: float | None = None
    #: the pid of its watcher (None: not watched, the caller supervises it)
    watcher: int | None = None


#: the watcher's program: run as a script (`python -P .../watch.py`), so it starts the worker before importing hermes
WATCH_SCRIPT = Path(__file__).with_name("watch.py")
#: how long a pass waits for a watcher to say it started the worker (interpreter start-up on a loaded host)
WATCHER_REPLY_S = 60.0


@dataclass(frozen=True)
class Watch:
    """What a watcher needs besides the worker contract: the run, its max runtime, and the dispatcher's settings it
    applies (worker_ttl, kill_grace, linger, failure_limit): the same rules as the dispatcher's own supervision."""

    attempt: int
    max_runtime: float | None
    settings: Mapping[str, object] = field(default_factory=dict)


def watchers_dir(paths: BoardPaths) -> Path:
    return paths.dir / "watchers"


def watcher_lock(paths: BoardPaths, run_id: int) -> Path:
    """The file the watcher of `run_id` holds an exclusive flock on for as long as it lives (its pid inside)."""
    return watchers_dir(paths) / f"{run_id}.lock"


def watcher_of(paths: BoardPaths, run_id: int) -> int | None:
    """The pid of the live watcher of `run_id` (0 if it cannot be read), or None when no watcher runs for it. A flock
    is released by the kernel when its holder dies however it dies, so a lock that can be taken means the watcher is
    gone: it either recorded the run (and removed the file) or was killed (the file is removed here)."""
    path = watcher_lock(paths, run_id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None  # no such file (never watched, or done), or not a file of ours: no watcher
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        try:
            os.unlink(path)  # left by a watcher that was killed: nobody holds it any more
        except FileNotFoundError:
            pass
        return None
    finally:
        os.close(fd)


def _start_watched(paths: BoardPaths, argv: list[str], workspace: Path, env: Mapping[str, str], env_base:
                   Mapping[str, str], log: Path, fd: int, *, task_id: str, run_id: int,
                   watch: Watch) -> Started:
    """Start the watcher, hand it the worker (argv, env, cwd, the log's fd) through a pipe (never argv: the
    environment may hold secrets), and wait for its answer: the worker's pid and start time, or why it could not be
    started (raised as the OSError or ValueError the dispatcher's own Popen would have raised)."""
    ensure_private_dir(watchers_dir(paths))
    spec = {"argv": argv, "cwd": str(workspace), "env": dict(env), "log_fd": fd, "log": str(log),
            "board": paths.slug, "db": str(paths.db), "lock": str(watcher_lock(paths, run_id)), "task_id": task_id,
            "run_id": run_id, "attempt": watch.attempt, "max_runtime": watch.max_runtime,
            "settings": dict(watch.settings)}
    # The watcher's own environment is the dispatcher's, without the worker contract's variables: a process
    # carrying a run's token is taken for its worker (procs.find_worker).
    own_env = {k: v for k, v in env_base.items() if k not in CONTRACT_ENV}
    watcher = subprocess.Popen(
        [sys.executable, "-P", str(WATCH_SCRIPT)], cwd=paths.dir, env=own_env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=fd, pass_fds=(fd,), close_fds=True, start_new_session=True,
    )
    assert watcher.stdin is not None and watcher.stdout is not None
    try:
        try:
            watcher.stdin.write(json.dumps(spec).encode("ascii"))
            watcher.stdin.close()
        except BrokenPipeError:
            pass  # it died at start: its exit status says so below
        ready, _, _ = select.select([watcher.stdout], [], [], WATCHER_REPLY_S)
        line = watcher.stdout.readline() if ready else b""
    finally:
        watcher.stdout.close()
    if not line:
        if not ready:
            watcher.kill()  # never answered: it started nothing we know of
        code = watcher.wait()
        raise OSError(errno.ECHILD, f"the watcher exited ({code}) before starting the worker (see the task's log)"
                      if ready else f"the watcher did not answer within {WATCHER_REPLY_S:g}s")
    reply = json.loads(line)
    if "error" in reply:
        watcher.wait()
        if reply["error"] == "ValueError":
            raise ValueError(reply["message"])
        raise OSError(reply["errno"], reply["strerror"], reply["filename"])
    return Started(popen=watcher, argv=tuple(argv), workspace=workspace, log=log, pid=int(reply["pid"]),
                   create_time=reply["create_time"], watcher=watcher.pid)


def start(paths: BoardPaths, *, command: str, task_id: str, run_id: int, title: str, attempt: int,
          env_base: Mapping[str, str], max_bytes: int, backups: int, profile: str | None = None,
          workspace: Path | None = None, branch: str | None = None,
          model: Mapping[str, str | None] | None = None, watch: Watch | None = None) -> Started:
    """Start the worker for one run (`watch`: under a watcher, for a one-pass dispatch). Raises InvalidValue (bad
    command), OSError (exec failed, no such program, no permission) or ValueError (an argument Popen refuses: a NUL
    byte, text the filesystem encoding cannot hold); the caller records those as a failed attempt. `workspace` is
    where it runs (dispatch/workspaces.py made it; None: the task's scratch directory)."""
    if workspace is None:
        workspace = workspace_for(paths, task_id)
    argv = build_argv(command, {"task_id": task_id, "run_id": str(run_id), "board": paths.slug,
                                "workspace": str(workspace), "title": title})
    env = worker_env(env_base, db=paths.db, board=paths.slug, task_id=task_id, run_id=run_id, workspace=workspace,
                     profile=profile, branch=branch, model=model)
    log = log_path(paths, task_id)
    fd = open_log(log, max_bytes=max_bytes, backups=backups)
    try:
        os.write(fd, f"--- {iso(time.time())} run {run_id} attempt {attempt}: {shlex.join(argv)}\n".encode(
            "utf-8", "replace"))
        if watch is not None:
            return _start_watched(paths, argv, workspace, env, env_base, log, fd, task_id=task_id, run_id=run_id,
                                  watch=watch)
        # watch.py starts a watched worker with this very call (it cannot import this module before starting it)
        popen = subprocess.Popen(
            argv, cwd=workspace, env=env, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, close_fds=True,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        note = f"--- {iso(time.time())} run {run_id}: could not start: {exc.__class__.__name__}: {exc}\n"
        os.write(fd, note.encode("utf-8", "replace"))
        raise
    finally:
        os.close(fd)  # the child has its own copy; the dispatcher keeps no fd per worker for its log
    return Started(popen=popen, argv=tuple(argv), workspace=workspace, log=log, pid=popen.pid)
