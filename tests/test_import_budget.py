"""Start-up budget of the commands agents run all day (issue 11: a fast CLI), checked structurally, not timed.

`hermes kanban create|show --json|claim|heartbeat|complete|block` run thousands of times a day; each must start in a
few times a bare interpreter (bench/cli_startup.py measures it). What they import is what they cost, so each runs
here through the console script's entry point (read from pyproject.toml, as pip installs it) in a fresh interpreter,
and must not import click (the fast path in hermes_cli/fast.py parses them without it) nor any of the heavier or
unneeded modules below, nor the product modules they have no use for. Timings belong in bench/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: never imported by a hot worker command: click (the fast path exists to skip it) and what only other commands,
#: the spool writer, a log call or a bug report need (datetime and random: only a failed attempt or a busy board,
#: and core.models.iso renders times without datetime)
FORBIDDEN = {
    "click", "textual", "rich", "tui", "psutil", "filelock", "logging", "socket", "hashlib", "secrets", "traceback",
    "asyncio", "sqlite3", "_sqlite3", "multiprocessing", "concurrent", "ssl", "http", "email", "subprocess", "uuid",
    "gettext", "argparse", "shutil", "tempfile", "unittest", "xml", "tomllib", "datetime", "random",
    # threading: only a contended write's helper thread (store/write_queue.py) needs it; bare locks come from _thread
    "threading",
}
#: product modules a hot command has no use for (of hermes_cli.cli, only the click-free modules the fast path and the
#: click commands share: CLICK_FREE_CLI)
FORBIDDEN_PRODUCT = {
    "hermes_cli.main", "hermes_cli.cli", "hermes_cli.kanban.dispatch.supervisor",
    "hermes_cli.kanban.durability.backup", "hermes_cli.kanban.durability.doctor",
    "hermes_cli.kanban.durability.reconcile", "hermes_cli.kanban.dispatch.backups",
}

CLICK_FREE_CLI = {"hermes_cli.cli", "hermes_cli.cli.hot", "hermes_cli.cli.render"}
#: what each hot verb also leaves alone: the dispatcher (a worktree task's clean-up loads dispatch/workspaces.py only
#: for such a task), stats and dispatch queries, workspaces (`context`'s), and the spool except for the reports that
#: check their input with it (complete, block)
NOT_NEEDED = {"hermes_cli.kanban.dispatch", "hermes_cli.kanban.store.stats", "hermes_cli.kanban.store.dispatch",
              "hermes_cli.kanban.domain.workspaces"}
SPOOL = {"hermes_cli.kanban.durability.spool"}

PROBE = r"""
import atexit, importlib, json, sys
out, entry = sys.argv[1], sys.argv[2]
def dump():
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(dump)
sys.argv = ["hermes", *sys.argv[3:]]
module, func = entry.split(":")
getattr(importlib.import_module(module), func)()
"""


def entry_point() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["scripts"]["hermes"])


def _hermes(*argv: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run([sys.executable, "-m", "hermes_cli.main", *argv], capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def _modules(tmp_path: Path, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    out = tmp_path / "modules.json"
    p = subprocess.run([sys.executable, "-c", PROBE, str(out), entry_point(), *argv], capture_output=True, text=True,
                       timeout=60, env=env)
    return p.returncode, set(json.loads(out.read_text()))


def _worker_env(task: str, run: int) -> dict[str, str]:
    import os

    return {**os.environ, "HERMES_KANBAN_TASK": task, "HERMES_KANBAN_RUN_ID": str(run)}


@pytest.mark.parametrize("verb", ["create", "create --json", "show --json", "claim", "claim --json", "heartbeat",
                                  "complete", "complete --json", "block"])
def test_the_hot_commands_stay_within_their_import_budget(tmp_path: Path, verb: str) -> None:
    task = _hermes("kanban", "create", "budget")
    argv, env = ["kanban"], None
    if verb.startswith("create"):
        argv += ["create", "another", "--priority", "2", *verb.split()[1:]]
    elif verb.startswith("show"):
        argv += ["show", task, "--json"]
    elif verb.startswith("claim"):
        argv += ["claim", task, *verb.split()[1:]]
    else:  # the worker's reports: task and run from the environment, as a dispatched worker has them
        run = json.loads(_hermes("kanban", "claim", task, "--json"))["run_id"]
        env = _worker_env(task, run)
        argv += {"heartbeat": ["heartbeat"], "complete": ["complete", "--summary", "done"],
                 "complete --json": ["complete", "--json"], "block": ["block", "needs an API key"]}[verb]
    code, modules = _modules(tmp_path, argv, env)
    assert code == 0
    top = {m.split(".")[0] for m in modules}
    assert top & FORBIDDEN == set(), f"hermes {' '.join(argv)} imported {sorted(top & FORBIDDEN)}"
    forbidden = FORBIDDEN_PRODUCT | NOT_NEEDED | (set() if verb.startswith(("complete", "block")) else SPOOL)
    product = {m for m in modules if any(m == p or m.startswith(p + ".") for p in forbidden)} - CLICK_FREE_CLI
    assert product == set(), f"hermes {' '.join(argv)} imported {sorted(product)}"
    assert "apsw" in top  # it did talk to the board


def test_other_commands_still_go_through_click(tmp_path: Path) -> None:
    """The budget above is the fast path's, not a filter that hides work: anything else is the click CLI's."""
    _hermes("kanban", "init")
    code, modules = _modules(tmp_path, ["kanban", "list", "--json"])
    assert code == 0 and "click" in modules and "hermes_cli.main" in modules
