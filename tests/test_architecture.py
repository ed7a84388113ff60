"""The import direction (docs/architecture.md) holds: import-linter's contracts in pyproject.toml pass, and they are
not vacuous: one back-edge added to a scratch copy of the tree (the store importing the domain) breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    # The packages are found through sys.path: the scratch copy goes first, so it is the tree that gets analysed.
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_import_contracts_are_kept() -> None:
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_a_back_edge_breaks_the_contracts(tmp_path: Path) -> None:
    for name in ("hermes_cli", "tui"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    tasks = tmp_path / "hermes_cli" / "kanban" / "store" / "tasks.py"
    tasks.write_text(tasks.read_text() + "\nfrom ..domain import board as _back_edge  # noqa: E402,F401\n")
    r = lint_imports(tmp_path)
    assert r.returncode != 0, r.stdout
    assert "hermes_cli.kanban.store.tasks -> hermes_cli.kanban.domain.board" in r.stdout
