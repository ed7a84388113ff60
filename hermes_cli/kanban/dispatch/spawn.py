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
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
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
    popen: subprocess.Popen[bytes]
    argv: tuple[str, ...]
    workspace: Path
    log: Path


def start(paths: BoardPaths, *, command: str, task_id: str, run_id: int, title: str, attempt: int,
          env_base: Mapping[str, str], max_bytes: int, backups: int, profile: str | None = None,
          workspace: Path | None = None, branch: str | None = None,
          model: Mapping[str, str | None] | None = None) -> Started:
    """Start the worker for one run. Raises InvalidValue (bad command), OSError (exec failed, no such program, no
    permission) or ValueError (an argument Popen refuses: a NUL byte, text the filesystem encoding cannot hold); the
    caller records those as a failed attempt. `workspace` is where it runs (dispatch/workspaces.py made it; None:
    the task's scratch directory)."""
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
    return Started(popen=popen, argv=tuple(argv), workspace=workspace, log=log)
