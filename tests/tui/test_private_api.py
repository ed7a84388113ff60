"""The TUI uses only public API: no private name of Textual (or any other library), and no private name of another
module (issue 10). A private name (`_x`) may only be used in the module that defines it."""

from __future__ import annotations

import ast
from pathlib import Path

TUI = Path(__file__).resolve().parents[2] / "tui"


def defined_private_names(tree: ast.Module) -> set[str]:
    """The `_x` names a module defines: functions, classes, methods, class attributes and `self._x = ...`."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_")}


def foreign_private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    own = defined_private_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name not in own:
                found.append(f"{path.name}:{node.lineno} uses .{name}")
    return found


def test_the_tui_uses_no_private_name_it_does_not_define() -> None:
    files = sorted(TUI.rglob("*.py"))
    assert len(files) > 5, f"no TUI modules found under {TUI}"
    found = [use for path in files for use in foreign_private_uses(path)]
    assert found == []


def test_the_check_sees_a_private_call(tmp_path: Path) -> None:
    """The check itself: a call of a library's private method is reported, one of the module's own is not."""
    probe = tmp_path / "probe.py"
    probe.write_text("from x import _hidden\nclass C:\n    def _mine(self):\n        self._scroll_update(1)\n"
                     "        self._mine()\n")
    assert foreign_private_uses(probe) == ["probe.py:1 imports _hidden", "probe.py:4 uses ._scroll_update"]
