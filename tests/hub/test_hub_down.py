"""The hub goes away while the board keeps working: local writes never touch the network, the backlog and the error
show in doctor, and the hub converges soon after it is back (a real server stopped and started again)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.store.pg.server import ThrowawayServer

from .conftest import assert_hub_equals_local, board_id, hermes, hub_ack, last_json, spawn, wait_for


def test_create_and_complete_never_load_the_hub_code(hub_url):
    """Structural, not timed: with a hub configured, the write path imports neither the sync nor psycopg."""
    code = (
        "import sys\n"
        "from hermes_cli.kanban import Board\n"
        "with Board.open() as b:\n"
        "    t, _ = b.create_task('x')\n"
        "    c = b.claim(t.id, worker='w')\n"
        "    b.complete(c.task_id, c.run_id)\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('psycopg', 'hermes_cli.kanban.hub', "
        "'hermes_cli.kanban.store.hub')))\n"
        "assert not bad, bad\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "HERMES_KANBAN_HUB_URL": hub_url})
    assert p.returncode == 0, p.stderr
    for verb in (["create", "y"], ["list"]):
        assert hermes(*verb, env={"HERMES_KANBAN_HUB_URL": hub_url}).returncode == 0


@pytest.fixture
def own_server():
    server = ThrowawayServer(fsync=False).start()
    try:
        yield server
    finally:
        server.stop()


def _ops(n: int) -> list[float]:
    """n create+claim+complete cycles in this process; the seconds each took."""
    took = []
    with Board.open() as b:
        for i in range(n):
            t0 = time.perf_counter()
            t, _ = b.create_task(f"while hub down {i}")
            c = b.claim(t.id, worker="w")
            assert c is not None
            b.complete(c.task_id, c.run_id, summary="ok")
            took.append(time.perf_counter() - t0)
    return took


def test_hub_down_local_writes_continue_and_the_hub_converges(own_server, monkeypatch):
    url = own_server.url
    monkeypatch.setenv("HERMES_KANBAN_PG_CONNECT_TIMEOUT", "2")
    hermes("create", "before")
    follower = spawn("sync", "--hub", url, "--follow", "--json")
    try:
        wait_for(lambda: _has_board() and hub_ack(url, board_id()) > 0, 60, "the first sync")
        bid = board_id()
        up = _ops(20)
        wait_for(lambda: hub_ack(url, bid) == _last_event(), 30, "the hub to catch up while up")

        own_server.stop(remove=False)
        down = _ops(20)
        # Generous bound (a loaded 2-core CI machine); the budget is 50 ms, and nothing here waits on the network.
        assert max(down) < 2.0, down
        doc = hermes("doctor", "--json", env={"HERMES_KANBAN_HUB_URL": url})
        sync = [f for f in last_json(doc.stdout)["findings"] if f["check"] == "sync"][0]
        assert sync["data"]["pending"] >= 60, sync  # 20 cycles x 3 events, at least
        wait_for(lambda: "cannot be reached" in (_doctor_sync(url)["data"]["last_error"] or ""), 30,
                 "doctor to show the sync's error")

        own_server.start()
        back = time.monotonic()
        target = _last_event()
        wait_for(lambda: hub_ack(url, bid) >= target, 30, "the hub to converge after it came back")
        converged = time.monotonic() - back
        assert _doctor_sync(url)["data"]["last_error"] is None or wait_for(
            lambda: _doctor_sync(url)["data"]["last_error"] is None, 10, "the error to clear")
    finally:
        follower.send_signal(signal.SIGTERM)
        stdout, stderr = follower.communicate(timeout=60)
    assert follower.returncode == 0, stderr
    assert "cannot be reached" in stderr and "back after" in stderr
    assert last_json(stdout)["hub_errors"] >= 1
    assert_hub_equals_local(url)
    print(f"\nhub down: per-cycle median up {sorted(up)[10] * 1000:.1f} ms, down {sorted(down)[10] * 1000:.1f} ms; "
          f"converged {converged:.2f}s after the server was back")


def _has_board() -> bool:
    with Board.open() as b:
        return b.db.value("SELECT value FROM meta WHERE key = 'board_id'") is not None


def _last_event() -> int:
    with Board.open() as b:
        return int(b.db.value("SELECT max(id) FROM events"))


def _doctor_sync(url: str) -> dict:
    doc = hermes("doctor", "--json", env={"HERMES_KANBAN_HUB_URL": url})
    return [f for f in last_json(doc.stdout)["findings"] if f["check"] == "sync"][0]


def test_sync_connection_killed_mid_batch_resumes_without_loss(hub_url):
    """pg_terminate_backend of the sync's connection, again and again while events stream in: the follower
    reconnects, resumes from the hub's ack, and the hub ends equal to the board."""
    from .conftest import hub_rows
    from .test_sync import spawn_writer

    hermes("create", "before")
    follower = spawn("sync", "--hub", hub_url, "--follow", "--json")
    writer = spawn_writer(3000, pause=0.002)
    killed = 0
    try:
        wait_for(lambda: _has_board() and hub_ack(hub_url, board_id()) > 0, 60, "the first sync")
        while writer.poll() is None:
            time.sleep(0.3)
            killed += sum(bool(r["pg_terminate_backend"]) for r in hub_rows(
                hub_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'hermes-kanban-sync' AND pid <> pg_backend_pid()"))
        assert writer.returncode == 0, writer.communicate()[1]
        last = _last_event()
        wait_for(lambda: hub_ack(hub_url, board_id()) >= last, 30, "the hub to converge")
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.communicate(timeout=30)
        follower.send_signal(signal.SIGTERM)
        stdout, stderr = follower.communicate(timeout=60)
    assert follower.returncode == 0, stderr
    assert killed >= 3, killed
    assert last_json(stdout)["hub_errors"] >= 1 and "back after" in stderr
    assert_hub_equals_local(hub_url)


def test_follow_with_the_hub_down_still_stops_at_its_timeout():
    """--follow --timeout while the hub never answers: the retry loop ends at the deadline (exit 0, "timeout")."""
    hermes("create", "x")
    t0 = time.monotonic()
    p = hermes("sync", "--hub", "postgresql://postgres@127.0.0.1:1/nohub", "--follow", "--timeout", "2", "--json",
               "--quiet", timeout=60)
    assert p.returncode == 0, p.stderr
    out = last_json(p.stdout)
    assert (out["status"], out["reason"]) == ("stopped", "timeout") and out["hub_errors"] >= 1
    assert out["acked"] is None and out["pending"] == 1
    assert time.monotonic() - t0 < 30


def test_a_failed_run_never_moves_the_local_checkpoint_back(own_server):
    """A sync that could not reach the hub knows nothing of its ack: the board's checkpoint (gc's floor, doctor's
    backlog) stays where the last successful run left it."""
    from .conftest import local_checkpoint

    url = own_server.url
    hermes("create", "x")
    first = hermes("sync", "--hub", url, "--once", "--json")
    assert first.returncode == 0, first.stderr
    acked = last_json(first.stdout)["acked"]
    assert acked and local_checkpoint(url) == acked
    own_server.stop(remove=False)
    p = hermes("sync", "--hub", url, "--once", env={"HERMES_KANBAN_PG_CONNECT_TIMEOUT": "2"})
    assert p.returncode == 4 and "cannot be reached" in p.stderr
    assert local_checkpoint(url) == acked
