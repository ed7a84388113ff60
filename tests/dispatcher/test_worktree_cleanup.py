"""A `--workspace worktree` task's git worktree is removed when the task is done or archived, per hermes-agent's rules
(PR NousResearch/hermes-agent#88129): only when nothing in it can be lost (no uncommitted or untracked file, every
commit pushed), with the branch we named (`wt/<task id>`) deleted too and a `--branch` the user named kept; else the
worktree stays and a `workspace_kept` event says why. Real git repositories in tmp dirs, the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.core.models import Task
from hermes_cli.kanban.dispatch import workspaces

from .conftest import HERMES, configure

GIT_ID = ["-c", "user.email=t@example.com", "-c", "user.name=t"]


def hermes(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERMES, "kanban", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def git(where: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(where), *args], check=True, capture_output=True, text=True).stdout.strip()


def repo_with(tmp_path: Path, board: Board, *, remote: bool = False) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("a\n", encoding="utf-8")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "a.txt")
    git(repo, *GIT_ID, "commit", "-qm", "init")
    if remote:
        git(tmp_path, "init", "-q", "--bare", "origin.git")
        git(repo, "remote", "add", "origin", str(tmp_path / "origin.git"))
        git(repo, "push", "-q", "origin", "main")
    assert hermes("boards", "set-default-workdir", str(repo)).returncode == 0
    return repo


def started(board: Board, repo: Path, **create: str) -> tuple[Task, int, Path]:
    """A worktree task, claimed, with its worktree made as the dispatcher makes it."""
    task, _ = board.create_task("t", workspace="worktree", **create)
    claim = board.claim(task.id)
    assert claim is not None
    where = workspaces.prepare(board.paths, board.get_task(task.id), str(repo))
    return board.get_task(task.id), claim.run_id, where.path


def branches(repo: Path) -> list[str]:
    return git(repo, "branch", "--format=%(refname:short)").split()


def last(board: Board, task_id: str) -> tuple[str, dict[str, object]]:
    e = board.detail(task_id, events=1).events[-1]
    return e.kind, e.payload


def test_a_clean_worktree_whose_commits_are_merged_goes_with_its_wt_branch_on_complete(board: Board,
                                                                                       tmp_path: Path) -> None:
    repo = repo_with(tmp_path, board)
    task, run, tree = started(board, repo)
    assert f"wt/{task.id}" in branches(repo)
    p = hermes("complete", task.id, "--run-id", str(run), "--json")
    assert p.returncode == 0, p.stderr
    assert not tree.exists()
    assert str(tree) not in git(repo, "worktree", "list")
    assert f"wt/{task.id}" not in branches(repo)
    assert last(board, task.id) == ("workspace_removed", {"path": str(tree), "branch": f"wt/{task.id}",
                                                         "branch_deleted": True})


def test_uncommitted_work_keeps_the_worktree_and_show_says_why(board: Board, tmp_path: Path) -> None:
    repo = repo_with(tmp_path, board)
    task, run, tree = started(board, repo)
    (tree / "new.txt").write_text("work\n", encoding="utf-8")  # untracked: lost by a removal
    assert hermes("complete", task.id, "--run-id", str(run)).returncode == 0
    assert (tree / "new.txt").read_text() == "work\n"
    assert f"wt/{task.id}" in branches(repo)
    kind, payload = last(board, task.id)
    assert kind == "workspace_kept"
    assert "1 uncommitted or untracked file" in str(payload["reason"])
    shown = hermes("show", task.id).stdout
    assert f"workspace_kept: {payload['reason']}" in shown


def test_unmerged_commits_keep_it_until_merged_then_archive_removes_it(board: Board, tmp_path: Path) -> None:
    repo = repo_with(tmp_path, board)  # no remote: a commit only this branch holds would be lost
    task, run, tree = started(board, repo)
    (tree / "b.txt").write_text("b\n", encoding="utf-8")
    git(tree, "add", "b.txt")
    git(tree, *GIT_ID, "commit", "-qm", "b")
    assert hermes("complete", task.id, "--run-id", str(run)).returncode == 0
    assert (tree / "b.txt").exists()
    kind, payload = last(board, task.id)
    assert kind == "workspace_kept" and "1 commit on no other branch" in str(payload["reason"])
    git(repo, *GIT_ID, "merge", "-q", "--no-edit", f"wt/{task.id}")
    p = hermes("archive", task.id, "--json")
    assert p.returncode == 0, p.stderr
    assert not tree.exists() and f"wt/{task.id}" not in branches(repo)
    assert (repo / "b.txt").read_text() == "b\n"
    assert last(board, task.id)[0] == "workspace_removed"


def test_with_a_remote_a_commit_must_be_pushed_and_a_named_branch_is_kept(board: Board, tmp_path: Path) -> None:
    repo = repo_with(tmp_path, board, remote=True)
    task, run, tree = started(board, repo, branch="feature/x")
    (tree / "c.txt").write_text("c\n", encoding="utf-8")
    git(tree, "add", "c.txt")
    git(tree, *GIT_ID, "commit", "-qm", "c")
    git(repo, *GIT_ID, "merge", "-q", "--no-edit", "feature/x")  # merged locally, but pushed nowhere
    assert hermes("complete", task.id, "--run-id", str(run)).returncode == 0
    kind, payload = last(board, task.id)
    assert kind == "workspace_kept" and "1 commit not pushed to any remote" in str(payload["reason"])
    git(tree, "push", "-q", "origin", "feature/x")
    assert hermes("archive", task.id).returncode == 0
    assert not tree.exists()
    assert "feature/x" in branches(repo)  # a branch the user named is never deleted
    assert last(board, task.id) == ("workspace_removed", {"path": str(tree), "branch": "feature/x",
                                                         "branch_deleted": False})


def test_a_worktree_path_that_is_the_main_checkout_is_never_removed(board: Board, tmp_path: Path) -> None:
    repo = repo_with(tmp_path, board)
    task, _ = board.create_task("t", workspace=f"worktree:{repo}")
    assert hermes("complete", task.id).returncode == 0
    assert (repo / ".git").is_dir() and (repo / "a.txt").exists()
    kind, payload = last(board, task.id)
    assert kind == "workspace_kept" and "not a linked git worktree" in str(payload["reason"])


def test_a_worker_that_exits_0_in_a_clean_worktree_has_it_removed_by_the_dispatcher(board: Board,
                                                                                   tmp_path: Path) -> None:
    configure(board, backup_interval="off")
    repo = repo_with(tmp_path, board)
    task, _ = board.create_task("t", command="true", workspace="worktree")
    p = hermes("dispatch", "--until-idle", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["completed"] == 1
    assert board.get_task(task.id).status == TaskStatus.DONE
    assert not (board.paths.workspaces_dir / task.id).exists()
    assert f"wt/{task.id}" not in branches(repo)
    assert last(board, task.id)[0] == "workspace_removed"
