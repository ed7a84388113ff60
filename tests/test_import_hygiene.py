"""Layering and start-up cost: the headless CLI never imports textual, and `--help` / `create` stay light.

"Fast" is checked structurally, not with a stopwatch (timed assertions belong in bench/store_bench.py, which
prints the median wall time of `hermes kanban create` next to a bare interpreter): each command runs in a fresh
interpreter and must not import any of the heavy or unneeded modules below.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: never imported by the headless CLI
NEVER = {"textual", "rich", "tui"}
#: not needed to print help or create a task: each costs start-up time (or, for sqlite3, risks a second SQLite
#: library in a process that talks to the board through APSW)
HEAVY = NEVER | {"asyncio", "psutil", "filelock", "sqlite3", "_sqlite3", "multiprocessing", "concurrent", "ssl",
                 "http", "email", "urllib3", "hypothesis", "pytest", "xml", "tomllib", "unittest"}

PROBE = r"""
import json, sys
argv = json.loads(sys.argv[1])
from hermes_cli.main import main
try:
    main(argv)
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print("\nMODULES " + json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _imported(argv: list[str]) -> tuple[int, set[str]]:
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True, timeout=60)
    marker = p.stdout.rindex("\nMODULES ")
    data = json.loads(p.stdout[marker + len("\nMODULES "):])
    return data["code"], set(data["modules"])


def test_importing_the_cli_does_not_import_textual() -> None:
    p = subprocess.run(
        [sys.executable, "-c",
         "import sys, hermes_cli, hermes_cli.main, hermes_cli.cli, hermes_cli.kanban; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'tui')))"],
        capture_output=True, text=True, timeout=60,
    )
    assert (p.returncode, p.stdout, p.stderr) == (0, "[]\n", "")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["kanban", "--help"],
        ["kanban", "create", "--help"],
        ["kanban", "create", "import hygiene", "--priority", "3"],
        ["kanban", "create", "import hygiene", "--json"],
        ["kanban", "list", "--json"],
    ],
    ids=lambda a: " ".join(a),
)
def test_light_commands_import_nothing_heavy(argv: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", "init"], capture_output=True, timeout=60,
                   check=True)  # the board exists, as it does for every create after the first
    code, modules = _imported(argv)
    assert code in (0, None)
    assert modules & HEAVY == set(), f"hermes {' '.join(argv)} imported {sorted(modules & HEAVY)}"
    assert "apsw" in modules or "--help" in argv


#: product modules a task command (what workers run all day) has no use for
NOT_FOR_TASK_COMMANDS = {"hermes_cli.kanban.dispatch.supervisor", "hermes_cli.kanban.durability.backup",
                         "hermes_cli.kanban.durability.doctor",
                         "hermes_cli.kanban.durability.reconcile", "hermes_cli.cli.health", "hermes_cli.cli.dispatch",
                         "hermes_cli.cli.live", "hermes_cli.cli.boards"}

FULL_PROBE = PROBE.replace('{m.split(".")[0] for m in sys.modules}', "set(sys.modules)")


@pytest.mark.parametrize("argv", [["kanban", "create", "x"], ["kanban", "claim", "--json"]], ids=lambda a: a[1])
def test_task_commands_do_not_load_the_other_command_modules(argv: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", "init"], capture_output=True, timeout=60,
                   check=True)
    p = subprocess.run([sys.executable, "-c", FULL_PROBE, json.dumps(argv)], capture_output=True, text=True,
                       timeout=60)
    data = json.loads(p.stdout[p.stdout.rindex("\nMODULES ") + len("\nMODULES "):])
    assert set(data["modules"]) & NOT_FOR_TASK_COMMANDS == set()


def test_every_command_outside_tasks_py_is_in_the_lazy_map() -> None:
    """A command missing from LAZY_COMMANDS would be 'No such command' for the console script until --help ran."""
    from hermes_cli.cli import kanban
    from hermes_cli.cli.common import LAZY_COMMANDS

    where = {name: cmd.callback.__module__.rsplit(".", 1)[-1] for name, cmd in kanban.commands.items()
             if cmd.callback is not None}
    expected = {name: module for name, module in where.items() if module != "tasks"}
    assert LAZY_COMMANDS == expected


@pytest.mark.parametrize("argv", [["kanban", "doctor", "--help"], ["kanban", "backups", "list", "--help"],
                                  ["kanban", "dispatch", "--help"], ["kanban", "tui", "--help"]],
                         ids=lambda a: " ".join(a[1:]))
def test_lazily_loaded_commands_run_from_the_console_script(argv: list[str]) -> None:
    p = subprocess.run([sys.executable, "-m", "hermes_cli.main", *argv], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith(f"Usage: hermes {' '.join(argv[:-1])}"), p.stderr


def test_the_console_script_entry_point() -> None:
    """pyproject's `hermes = hermes_cli.main:main`: running the module is running the script."""
    p = subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("Usage: hermes kanban [OPTIONS] COMMAND [ARGS]...")


@pytest.mark.parametrize(
    "argv",
    [
        ["kanban", "dispatch", "--once", "--json"],
        ["kanban", "events", "--follow", "--timeout", "0.2", "--json"],
        ["kanban", "create", "no driver", "--json"],
    ],
)
def test_a_sqlite_board_never_imports_the_postgresql_driver(argv: list[str]) -> None:
    """The dispatcher (fleet code included), the event follower (the engine-picking bell) and the worker verbs on a
    SQLite board: psycopg is imported only for a PostgreSQL board (issue 13)."""
    code, modules = _imported(argv)
    assert code == 0
    assert "psycopg" not in modules
