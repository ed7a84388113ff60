"""Making a task's workspace when its worker starts (where it is: domain/workspaces.py), and removing a git
worktree once its task is done or archived (`release`).

A failure here (a `dir:` path that is a file, a worktree task on a board with no default workdir, `git worktree add`
refusing) is an InvalidValue naming the task and the fix; the launcher records it as a failed start (a crashed
attempt, so retries and max_retries bound it), and the run's summary carries the message.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import HermesError, InvalidValue
from ..core.models import Task, TaskStatus
from ..core.paths import BoardPaths, ensure_private_dir
from ..domain.workspaces import Where, where
from . import spawn

if TYPE_CHECKING:
    from ..domain.board import Board

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


# -- removing a finished task's git worktree ---------------------------------------------------------------------------
# hermes-agent's rules (PR NousResearch/hermes-agent#88129, `_cleanup_worktree_workspace`): when a worktree task
# completes or is archived, its worktree is removed only when it is provably free of work: a clean tree (no modified,
# staged or untracked file) AND every commit of its HEAD reachable from a remote-tracking ref. Any doubt (git fails, the
# path is the main checkout) keeps it. The branch is deleted only when it is the one we named (`wt/<task id>`); a
# `--branch` the user named is never deleted. One deliberate difference: in a repository with no remote at all,
# hermes-agent counts nothing as unpushed (and so removes the tree and force-deletes the branch with commits no other
# ref holds); here the commits must then be on another local branch or tag (merged), else the worktree is kept.

#: the task statuses after which a worktree is released (a review-gated task is not finished yet)
FINISHED = (TaskStatus.DONE, TaskStatus.ARCHIVED)


def release(board: Board, task: Task) -> dict[str, Any] | None:
    """Remove the git worktree of a done or archived `task` when nothing in it can be lost, else keep it; either way
    an event says so (`workspace_removed` {path, branch, branch_deleted}, `workspace_kept` {path, branch, reason}).
    Returns that event's kind and payload, or None when there is nothing to do (not a worktree task, not finished,
    no worktree on disk). Never raises: the completion it follows has landed; a failure to record the verdict is
    returned as `note_error` (the caller warns)."""
    if not (task.workspace or "").startswith("worktree") or task.status not in FINISHED:
        return None
    w = where(board.paths, task, None)
    if not w.path.exists():
        return None  # removed already (a repeated complete), or never made (the task never ran)
    try:
        out = _release(task, w.path)
    except (HermesError, OSError) as exc:  # git missing, too slow, cannot run: keep it, and say so
        why = exc.message if isinstance(exc, HermesError) else f"{exc.__class__.__name__}: {exc}"
        out = {"kind": "workspace_kept", "path": str(w.path), "branch": None, "reason": why}
    kind = out.pop("kind")
    try:
        board.note_workspace(task.id, kind, **out)
    except HermesError as exc:
        out["note_error"] = exc.message
    return {"kind": kind, **out}


def _release(task: Task, path: Path) -> dict[str, Any]:
    def kept(reason: str, branch: str | None = None) -> dict[str, Any]:
        return {"kind": "workspace_kept", "path": str(path), "branch": branch, "reason": reason}

    if not (path / ".git").is_file():  # a linked worktree's .git is a file; a directory is a main checkout
        return kept(f"{path} is not a linked git worktree (the main checkout, or not git at all): never removed")
    common = _out(path, "rev-parse", "--path-format=absolute", "--git-common-dir")
    if common is None:
        return kept("git rev-parse failed in the worktree: kept, to be safe")
    branch = _out(path, "symbolic-ref", "--short", "-q", "HEAD") or None  # None: a detached HEAD
    status = _out(path, "status", "--porcelain", "--untracked-files=all")
    if status is None:
        return kept("git status failed in the worktree: kept, to be safe", branch)
    if status:
        n = len(status.splitlines())
        return kept(f"{n} uncommitted or untracked file{'s' if n != 1 else ''} in {path}: commit and push "
                    f"(or discard) them, then git worktree remove {path}", branch)
    remotes = _out(path, "for-each-ref", "--format=%(refname)", "refs/remotes")
    if remotes is None:
        return kept("git for-each-ref failed in the worktree: kept, to be safe", branch)
    if remotes:
        ahead = _out(path, "rev-list", "--count", "HEAD", "--not", "--remotes")
        what = "not pushed to any remote: push them"
    else:  # no remote: the commits must be on another branch or a tag, else removing the branch loses them
        others = [f"--exclude={branch}"] if branch else []
        ahead = _out(path, "rev-list", "--count", "HEAD", "--not", *others, "--branches", "--tags")
        what = "on no other branch (the repository has no remote): merge them"
    if ahead is None or not ahead.isdigit():
        return kept("git rev-list failed in the worktree: kept, to be safe", branch)
    if int(ahead):
        n = int(ahead)
        return kept(f"{n} commit{'s' if n != 1 else ''} {what}, then hermes kanban archive {task.id} "
                    f"(or git worktree remove {path})", branch)
    done = _git(Path(common), "worktree", "remove", str(path))  # no --force: git itself refuses a dirty or locked tree
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return kept(f"git worktree remove refused: {why}", branch)
    ours = task.branch is None and branch == f"wt/{task.id}"
    deleted = ours and _git(Path(common), "branch", "-D", branch or "").returncode == 0
    return {"kind": "workspace_removed", "path": str(path), "branch": branch, "branch_deleted": deleted}


def _out(where: Path, *args: str) -> str | None:
    """git's stdout, stripped; None when it fails."""
    done = _git(where, *args)
    return done.stdout.strip() if done.returncode == 0 else None
