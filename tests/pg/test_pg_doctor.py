"""doctor of a PostgreSQL board: reachable, server version, schema version, the fleet's dispatchers and their
heartbeats, stale claims by the server's clock, the local spool, amcheck of the board's indexes; --json."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg

from hermes_cli.kanban import Board
from hermes_cli.kanban.store.pg.schema import LATEST

from ..cli.conftest import Result, run_hermes


def finding(r: Result, check: str) -> dict[str, Any]:
    return next(f for f in r.json()["findings"] if f["check"] == check)


def test_doctor_of_a_healthy_postgres_board(pg_url: str) -> None:
    with Board.open() as b:
        b.create_task("x")
    r = run_hermes("kanban", "doctor", "--json")
    assert (r.code, r.err) == (0, ""), r.out + r.err
    data = r.json()
    assert data["db"] == pg_url and data["healthy"] is True
    server = finding(r, "server")
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    assert server["level"] == "ok" and server["data"]["version"] == version and pg_url in server["message"]
    assert finding(r, "schema")["data"] == {"version": LATEST, "latest": LATEST}
    assert finding(r, "writable")["level"] == "ok"
    am = finding(r, "amcheck")
    # the test server runs as its superuser: amcheck can be created, and every index of the board is checked
    assert am["level"] == "ok" and am["data"]["available"] is True
    assert "tasks_claim_order" in am["data"]["indexes"] and "runs_pkey" in am["data"]["indexes"]
    with psycopg.connect(pg_url) as conn:  # the extension lives in public, never in the board's schema
        assert conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                            "WHERE extname = 'amcheck'").fetchone() == ("public",)
    assert finding(r, "spool")["data"] == {"pending": 0}
    assert finding(r, "stale_claims")["level"] == "ok"
    assert finding(r, "dispatcher")["level"] == "info"  # nothing with a command is ready: no dispatcher needed
    human = run_hermes("kanban", "doctor", "--full")
    assert human.code == 0 and human.out.splitlines()[-1] == "healthy" and "heapallindexed" in human.out


def test_doctor_reports_dispatchers_stale_claims_and_the_spool(pg_url: str) -> None:
    with Board.open() as b:
        t = b.create_task("stuck")[0]
        claim = b.claim(t.id, worker="w", ttl=0.001)
        time.sleep(0.02)  # past that 1 ms lease by any clock
        assert claim is not None
        now = b.db.clock()
        b.db.write(lambda: [
            b.db.execute("INSERT INTO dispatchers(host, pid, started_at, heartbeat_at, lease_s) VALUES (?, ?, ?, ?, ?)",
                         (host, pid, now - 100, now - age, 30.0))
            for host, pid, age in (("alpha", 11, 2.0), ("beta", 22, 300.0))])
    # a report this host could not deliver waits in the spool
    spooled = run_hermes("kanban", "complete", t.id, "--run-id", str(claim.run_id), "--json",
                         env={"HERMES_KANBAN_URL": "postgresql://postgres@127.0.0.1:1/nope",
                              "HERMES_KANBAN_PG_CONNECT_TIMEOUT": "1"})
    assert spooled.code == 0 and spooled.json()["spooled"] is True, spooled
    r = run_hermes("kanban", "doctor", "--json")
    assert r.code == 1, r.out + r.err
    disp = finding(r, "dispatcher")
    assert disp["level"] == "warn" and (disp["data"]["live"], disp["data"]["stale"]) == (1, 1)
    assert [(d["host"], d["pid"], d["stale"]) for d in disp["data"]["dispatchers"]] == [("alpha", 11, False),
                                                                                       ("beta", 22, True)]
    assert "alpha pid 11" in disp["message"] and "beta pid 22" in disp["message"]
    stale = finding(r, "stale_claims")
    assert stale["level"] == "warn" and stale["data"]["tasks"][0]["id"] == t.id
    assert stale["data"]["tasks"][0]["run_id"] == claim.run_id
    assert finding(r, "spool") == {"check": "spool", "level": "warn", "message": finding(r, "spool")["message"],
                                   "next": "hermes kanban reconcile-completions  (then --apply)",
                                   "data": {"pending": 1}}


def test_doctor_of_an_unreachable_server_fails_with_exit_4(hermes_home, monkeypatch) -> None:
    from hermes_cli.kanban.store.pg.server import free_port

    url = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/x"
    monkeypatch.setenv("HERMES_KANBAN_URL", url)
    monkeypatch.setenv("HERMES_KANBAN_PG_CONNECT_TIMEOUT", "1")
    r = run_hermes("kanban", "doctor", "--json")
    assert r.code == 4, r
    db = finding(r, "database")
    assert db["level"] == "fail" and "cannot be reached" in db["message"] and "pw" not in r.out + r.err
    assert r.err.startswith("error: board default is unhealthy: database: ") and len(r.err.splitlines()) == 1


def test_doctor_of_a_newer_schema_and_of_a_missing_board(pg_url: str) -> None:
    with Board.open() as b:
        b.db.write(lambda: b.db.execute("INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)",
                                        (LATEST + 9, b.db.clock())))
    r = run_hermes("kanban", "doctor", "--json")
    assert r.code == 4 and finding(r, "schema")["level"] == "fail"
    refused = run_hermes("kanban", "list")
    assert refused.code == 4 and refused.err.startswith("error: PostgreSQL board default at ") and \
        f"has schema pg v{LATEST + 9}, newer than this hermes (pg v{LATEST}); upgrade hermes-kanban" in refused.err
    missing = run_hermes("kanban", "--board", "nope", "doctor", "--json")
    assert missing.code == 1 and json.loads(missing.out)["error"]["code"] == "not_found", missing
