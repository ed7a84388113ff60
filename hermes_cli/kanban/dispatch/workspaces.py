"""Making a task's workspace when its worker starts (where it is: domain/workspaces.py).

A failure here (a `dir:` path that is a file, a worktree task on a board with no default workdir, `git worktree add`
refusing) is an InvalidValue naming the task and the fix; the launcher records it as a failed start (a crashed
attempt, so retries and max_retries bound it), and the run's summary carries the message.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..core.errors import InvalidValue
from ..core.models import Task
from ..core.paths import BoardPaths, ensure_private_dir
from ..domain.workspaces import Where, where
from . import spawn

#: `git worktree add` of a big repository can take a while; longer than this is a failed start
GIT_TIMEOUT_S = 120.0


def prepare(paths: BoardPaths, task: Task, default_workdir: str | None) -> Where:
    """Make (or find, on a retry) the task's workspace and say where it is."""
    w = where(paths, task, default_workdir)
    if w.kind == "scratch":
        return Where("scratch", spawn.workspace_for(paths, task.id))
    if w.kind == "dir":
        if task.workspace is None and not w.path.is_dir():
            raise InvalidValue(f"the default workdir {w.path} of board {paths.slug} is not a directory; "
                               f"fix it: hermes kanban boards set-default-workdir PATH")
        _make_dir(task, w.path)
        return w
    return _worktree(paths, task, w)


def _make_dir(task: Task, path: Path) -> None:
    if path.is_dir():
        return
    if os.path.lexists(path):
        raise InvalidValue(f"workspace {path} of task {task.id} exists and is not a directory; "
                           f"move it aside or recreate the task with another --workspace dir:PATH")
    try:
        path.mkdir(parents=True, mode=0o700)
    except OSError as exc:
        raise InvalidValue(f"cannot make workspace {path} of task {task.id}: {exc.strerror}") from None


def _worktree(paths: BoardPaths, task: Task, w: Where) -> Where:
    if w.repo is None:
        raise InvalidValue(f"task {task.id} runs in a git worktree but board {paths.slug} has no default workdir to "
                           "make it from: hermes kanban boards set-default-workdir PATH (a directory in a git "
                           "repository)")
    if (w.path / ".git").exists():
        return w  # made by an earlier attempt: a retry picks up its work
    if os.path.lexists(w.path) and (not w.path.is_dir() or any(w.path.iterdir())):
        raise InvalidValue(f"workspace {w.path} of task {task.id} exists and is not a git worktree; move it aside")
    assert w.branch is not None  # domain.workspaces.where() names one for every worktree
    if w.path.parent == paths.workspaces_dir:
        ensure_private_dir(paths.workspaces_dir)
    else:
        w.path.parent.mkdir(parents=True, exist_ok=True)
    exists = _git(w.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{w.branch}").returncode == 0
    args = ["worktree", "add", str(w.path), w.branch] if exists else ["worktree", "add", "-b", w.branch, str(w.path)]
    done = _git(w.repo, *args)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise InvalidValue(f"git worktree add for task {task.id} failed in {w.repo}: {why}")
    return w


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=GIT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise InvalidValue("git is not installed here; a worktree workspace needs it (or use --workspace "
                           "scratch|dir:PATH)") from None
    except subprocess.TimeoutExpired:
        raise InvalidValue(f"git {args[0]} in {repo} took longer than {GIT_TIMEOUT_S:g}s") from None
