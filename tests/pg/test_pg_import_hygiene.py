"""Nothing PostgreSQL-related is imported on a SQLite board's path (the issue: psycopg lives in an optional extra)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, sys
from hermes_cli.main import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code
print("\nMODULES " + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("argv", [
    ["kanban", "create", "x", "--json"], ["kanban", "list"], ["kanban", "boards", "list", "--json"],
    ["kanban", "doctor", "--json"], ["kanban", "backup", "--json"], ["kanban", "reconcile-completions"],
    ["kanban", "events", "--json"], ["kanban", "boards", "create", "other"],
], ids=" ".join)
def test_a_sqlite_board_never_imports_psycopg(argv: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", "create", "first"], capture_output=True,
                   timeout=60, check=True)
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True, timeout=60)
    data = json.loads(p.stdout[p.stdout.rindex("\nMODULES ") + len("\nMODULES "):])
    assert data["code"] in (0, 1, None), p.stderr  # doctor exits 1 on a board without a backup
    pg = [m for m in data["modules"] if m.split(".")[0] == "psycopg" or m.startswith("hermes_cli.kanban.store.pg")]
    assert pg == [], f"{' '.join(argv)} imported {pg}"
