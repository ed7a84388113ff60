"""Where a worker runs: `create --workspace scratch|worktree|worktree:PATH|dir:PATH [--branch B]` and the board's
default workdir (`boards set-default-workdir`). Real dispatcher passes, real workers, a real git repository."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hermes_cli.kanban import Board, TaskStatus

from .conftest import HERMES, configure, pycmd

#: a worker that writes its cwd, HERMES_KANBAN_WORKSPACE and HERMES_KANBAN_BRANCH into the file named by argv[1]
WHERE = ("import json,os,sys\nopen(sys.argv[1],'w').write(json.dumps([os.getcwd(),"
         "os.environ.get('HERMES_KANBAN_WORKSPACE'),os.environ.get('HERMES_KANBAN_BRANCH')]))")


def hermes(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERMES, "kanban", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def git_repo(path: Path) -> Path:
    path.mkdir()
    (path / "build.py").write_text("import sys\nopen('built-' + sys.argv[1], 'w').write('ok')\n", encoding="utf-8")
    for args in (["init", "-q"], ["add", "build.py"],
                 ["-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)
    return path


def test_create_stores_the_workspace_with_its_path_made_absolute(board: Board, tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    p = hermes("create", "a", "--workspace", "dir:data/x", "--json", cwd=tmp_path / "here")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["workspace"] == f"dir:{tmp_path / 'here' / 'data' / 'x'}"
    p = hermes("create", "b", "--workspace", "worktree", "--branch", "wt/ci-fix", "--json")
    assert (json.loads(p.stdout)["workspace"], json.loads(p.stdout)["branch"]) == ("worktree", "wt/ci-fix")
    p = hermes("create", "c", "--workspace", "dir:~/proj", "--json")
    assert json.loads(p.stdout)["workspace"] == f"dir:{os.path.expanduser('~/proj')}"


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["--workspace", "bogus"], 1,
         "error: invalid --workspace 'bogus': use scratch, worktree, worktree:PATH or dir:PATH"),
        (["--workspace", "dir:"], 1, "error: invalid --workspace 'dir:': dir: needs a path, e.g. dir:~/src/app"),
        (["--branch", "wt/x"], 2, "error: --branch only applies with --workspace worktree (or worktree:PATH)"),
        (["--workspace", "scratch", "--branch", "wt/x"], 2,
         "error: --branch only applies with --workspace worktree (or worktree:PATH)"),
        (["--workspace", "worktree", "--branch", "-x"], 1,
         "error: invalid --branch '-x': use a git branch name such as wt/fix-login (no spaces, not starting with '-')"),
    ],
)
def test_bad_workspace_values_are_refused_and_create_nothing(board: Board, args: list[str], code: int,
                                                              error: str) -> None:
    board.create_task("existing")
    before = board.last_event_id()
    p = hermes("create", "x", *args)
    assert (p.returncode, p.stderr) == (code, error + "\n")
    assert board.last_event_id() == before


def test_set_default_workdir_refuses_a_missing_directory_and_clears(board: Board, tmp_path: Path) -> None:
    p = hermes("boards", "set-default-workdir", str(tmp_path / "nope"))
    assert (p.returncode, p.stderr) == (1, f"error: default workdir {tmp_path / 'nope'} is not an existing "
                                           f"directory; create it first (mkdir -p {tmp_path / 'nope'})\n")
    p = hermes("boards", "set-default-workdir", "nosuchboard", str(tmp_path))
    assert p.returncode == 1 and p.stderr.startswith("error: board nosuchboard does not exist")
    assert board.settings()["default_workdir"] is None
    p = hermes("boards", "set-default-workdir", str(tmp_path), "--json")
    assert json.loads(p.stdout) == {"slug": "default", "default_workdir": str(tmp_path)}
    assert board.settings()["default_workdir"] == str(tmp_path)
    p = hermes("boards", "set-default-workdir", "default", "--clear", "--json")
    assert json.loads(p.stdout) == {"slug": "default", "default_workdir": None}


def test_workers_run_in_the_default_workdir_a_dir_and_a_git_worktree(board: Board, tmp_path: Path) -> None:
    configure(board, backup_interval="off")
    repo = git_repo(tmp_path / "repo")
    assert hermes("boards", "set-default-workdir", str(repo)).returncode == 0
    # the README's tour: a relative script is found, because the worker runs in the default workdir
    readme, _ = board.create_task("build index", command="python3 build.py {task_id}")
    out = {k: tmp_path / f"{k}.json" for k in ("dir", "tree", "scratch")}
    in_dir = hermes("create", "d", "--command", pycmd(WHERE, str(out["dir"])), "--workspace",
                    f"dir:{tmp_path / 'made' / 'here'}").stdout.strip()
    in_tree = hermes("create", "t", "--command", pycmd(WHERE, str(out["tree"])), "--workspace", "worktree",
                     "--branch", "wt/fix").stdout.strip()
    scratch = hermes("create", "s", "--command", pycmd(WHERE, str(out["scratch"])), "--workspace",
                     "scratch").stdout.strip()
    p = hermes("dispatch", "--until-idle", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["completed"] == 4, p.stderr
    assert (repo / f"built-{readme.id}").read_text() == "ok"
    made = str(tmp_path / "made" / "here")
    assert json.loads(out["dir"].read_text()) == [made, made, None]
    tree = str(board.paths.workspaces_dir / in_tree)
    assert json.loads(out["tree"].read_text()) == [tree, tree, "wt/fix"]
    # the worker exited 0 leaving the tree clean and no commit of its own: the worktree goes (test_worktree_cleanup.py),
    # and the branch the user named stays
    assert not Path(tree).exists()
    assert tree not in subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True,
                                      text=True).stdout
    assert "wt/fix" in subprocess.run(["git", "-C", str(repo), "branch"], capture_output=True, text=True).stdout
    assert json.loads(out["scratch"].read_text())[0] == str(board.paths.workspaces_dir / scratch)
    assert all(board.get_task(t).status == TaskStatus.DONE for t in (in_dir, in_tree, scratch))


def test_a_worktree_task_on_a_board_without_a_default_workdir_fails_to_start_and_says_why(board: Board) -> None:
    configure(board, backup_interval="off")
    t, _ = board.create_task("t", command="true", workspace="worktree", max_retries=0)
    p = hermes("dispatch", "--once", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["spawn_failed"] == 1
    run = board.detail(t.id, events=0).runs[-1]
    assert run.summary is not None and "has no default workdir to make it from: hermes kanban boards " \
        "set-default-workdir PATH" in run.summary
    assert board.get_task(t.id).status == TaskStatus.BLOCKED  # no retries left: given up, not spawned elsewhere
