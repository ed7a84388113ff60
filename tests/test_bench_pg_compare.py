"""bench/pg_compare.py cannot rot: a smoke run of the hermes rows (no timing asserted) on the test server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import pgserver

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_pg_compare_quick_hermes_runs_and_refuses_the_stale_completion(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_KANBAN_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pg_compare.py"), "--quick", "--only", "hermes", "--workers", "1",
         "--samples", "5", "--pg-url", pgserver.admin_url(), "--json"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for system in ("hermes", "hermes-next"):
        cell = res["throughput"][system]["1"]
        assert cell["completed"] > 0 and cell["tasks_per_s"] > 0, cell
    assert res["latency"]["hermes"]["n"] == 5, res["latency"]
    (stall,) = res["stall"]["hermes"]
    # the stalled worker's completion after SIGCONT must be refused (StaleRun) while the other worker holds the task
    assert stall["takeover"] is True and stall["stale_accepted"] is False, stall
    assert "stale completions accepted" in proc.stdout
