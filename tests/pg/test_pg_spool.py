"""A worker's report spools on its host when the PostgreSQL server cannot be reached, and `reconcile-completions`
applies it once the server is back, with the same rules as on SQLite (a stale run's report is a conflict, never
applied). The server is this test's own (stopped and started here), not the session's shared one."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.store.pg.server import ThrowawayServer, wait_until_accepting

from ..cli.conftest import run_hermes


@pytest.fixture
def own_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThrowawayServer]:
    server = ThrowawayServer(fsync=False).start()
    monkeypatch.setenv("HERMES_KANBAN_URL", server.url)
    monkeypatch.setenv("HERMES_KANBAN_PG_CONNECT_TIMEOUT", "1")
    try:
        yield server
    finally:
        server.stop()


def test_reports_spool_while_the_server_is_down_and_reconcile_applies_them(
    own_server: ThrowawayServer, hermes_home: Path
) -> None:
    with Board.open() as b:
        live_task = b.create_task("finishes while the server is down")[0]
        live = b.claim(live_task.id, worker="w1", ttl="1h")
        contested = b.create_task("taken over")[0]
        stale = b.claim(contested.id, worker="paused", ttl=0.001)
        time.sleep(0.02)  # past that 1 ms lease by any clock
        newer = b.claim(contested.id, worker="w2", ttl="1h")  # the paused worker's lease expired: a new run
        assert live is not None and stale is not None and newer is not None
    own_server.stop(remove=False, mode="fast")  # a clean stop: an fsync=False server keeps every commit
    try:
        ok = run_hermes("kanban", "complete", live_task.id, "--run-id", str(live.run_id), "--summary", "did it",
                        "--json")
        assert ok.code == 0 and ok.json()["spooled"] is True, ok
        late = run_hermes("kanban", "complete", contested.id, "--run-id", str(stale.run_id), "--json")
        assert late.code == 0 and late.json()["spooled"] is True, late
        blocked = run_hermes("kanban", "block", contested.id, "--run-id", str(newer.run_id), "--reason", "x")
        assert blocked.code == 0 and "spooled" in blocked.out + blocked.err, blocked
        down = run_hermes("kanban", "reconcile-completions", "--json")
        assert down.code == 4 and json.loads(down.out)["error"]["code"] == "unreachable", down
    finally:
        own_server.start()
        wait_until_accepting(own_server.url)
    dry = run_hermes("kanban", "reconcile-completions", "--json")
    assert dry.code == 0, dry
    plan = {(d["task_id"], d["run_id"]): d for d in dry.json()}
    assert plan[(live_task.id, live.run_id)]["proposed_action"] == "apply"
    assert plan[(contested.id, stale.run_id)]["proposed_action"] == "conflict"
    assert plan[(contested.id, newer.run_id)]["proposed_action"] == "apply"
    with Board.open() as b:  # a dry run changes nothing
        assert b.get_task(live_task.id).status == "running"
    applied = run_hermes("kanban", "reconcile-completions", "--apply", "--json")
    assert applied.code == 3, applied  # the stale run's report conflicts and stays in the spool
    data = applied.json()
    assert (data["applied"], data["conflicts"]) == (2, 1) and data["error"]["code"] == "conflict"
    assert Path(data["backup"]).is_file()  # a verified backup (a SQLite file) first
    with Board.open() as b:
        done = b.get_task(live_task.id)
        assert done.status == "done" and done.summary == "did it"
        t = b.get_task(contested.id)
        assert t.status == "blocked"  # the current run's block applied; the stale completion did not
        assert b.db.value("SELECT count(*) FROM events WHERE kind = 'reconciled'") == 2
    again = run_hermes("kanban", "reconcile-completions", "--apply", "--json")
    assert again.code == 3 and again.json()["applied"] == 0  # idempotent: only the conflict is left
