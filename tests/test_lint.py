"""The tree stays lint- and type-clean: ruff and mypy run as real subprocesses from the repo root, with the
configuration in pyproject.toml ([tool.ruff], [tool.mypy]), and must exit 0.

Both tools are pinned in the `test` extra, so a new release cannot turn this red on its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # sys.executable: the tools installed next to the interpreter running the tests, not whatever is on PATH.
    # mypy from a cold cache type-checks textual too; the timeout only stops a hung run, it is not a speed check.
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _report(p: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(map(str, p.args[2:]))} exited {p.returncode}\n{p.stdout}\n{p.stderr}"


def test_ruff_clean():
    p = _run("ruff", "check", "hermes_cli", "tui", "tests", "bench")
    assert p.returncode == 0, _report(p)


def test_mypy_clean():
    p = _run("mypy", "hermes_cli", "tui")
    assert p.returncode == 0, _report(p)
