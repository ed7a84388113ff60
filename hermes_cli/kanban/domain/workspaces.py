"""Where a task's worker runs (its workspace), as a pure answer: nothing is created here (dispatch/workspaces.py
makes the directory or the git worktree when a worker starts; `context` shows the answer).

- no `--workspace`: the board's default workdir (`boards set-default-workdir`, `boards create --default-workdir`)
  when it has one, else `scratch`;
- `scratch`: `<board>/workspaces/<task>/`, the task's own directory, kept across its retries;
- `dir:PATH`: that directory (made if missing);
- `worktree`, `worktree:PATH`: a git worktree of the repository of the board's default workdir, at
  `<board>/workspaces/<task>/` (or PATH), on the task's `--branch` (default `wt/<task id>`), kept across retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.models import Task
from ..core.paths import BoardPaths


@dataclass(frozen=True, slots=True)
class Where:
    kind: str  #: scratch | dir | worktree
    path: Path
    #: worktree: the directory whose git repository the worktree is made from (the board's default workdir)
    repo: Path | None = None
    branch: str | None = None


def where(paths: BoardPaths, task: Task, default_workdir: str | None) -> Where:
    ws = task.workspace
    if ws is None:
        if default_workdir:
            return Where("dir", Path(default_workdir))
        ws = "scratch"
    if ws.startswith("dir:"):
        return Where("dir", Path(ws[len("dir:"):]))
    if ws == "worktree" or ws.startswith("worktree:"):
        path = Path(ws[len("worktree:"):]) if ws.startswith("worktree:") else paths.workspaces_dir / task.id
        return Where("worktree", path, Path(default_workdir) if default_workdir else None,
                     task.branch or f"wt/{task.id}")
    return Where("scratch", paths.workspaces_dir / task.id)
