"""`hermes kanban sync` against a real PostgreSQL hub, in real processes: idempotent resend, single-flight, the stale
lease rule of --break-lock, graceful stops that keep the checkpoint, the hub's version rule, gc's floor, off."""

from __future__ import annotations

import signal
import time

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.hubconf import redact
from hermes_cli.kanban.store.hub import schema, writes
from hermes_cli.kanban.store.hub.link import HubLink, HubVersionRefused

from .conftest import (
    assert_hub_equals_local,
    board_id,
    hermes,
    hub_ack,
    hub_exec,
    hub_rows,
    last_json,
    lease_row,
    local_checkpoint,
    spawn,
    wait_for,
)


def make_tasks(n: int, slug: str | None = None) -> list[str]:
    ids = []
    with Board.open(slug, create=True) as b:
        for i in range(n):
            t, _ = b.create_task(f"task {i}")
            ids.append(t.id)
        for tid in ids[: n // 2]:
            claim = b.claim(tid, worker="w")
            assert claim is not None
            b.complete(claim.task_id, claim.run_id, summary="done")
    return ids


def sync_once(url: str, *extra: str) -> dict:
    p = hermes("sync", "--hub", url, "--once", "--json", *extra)
    assert p.returncode == 0, p.stderr
    return last_json(p.stdout)


def test_sync_once_replicates_every_event_and_task(hub_url):
    make_tasks(20)
    out = sync_once(hub_url)
    assert out["status"] == "synced" and out["sent"] == out["inserted"] == out["acked"] > 0
    assert out["pending"] == 0
    events, tasks = assert_hub_equals_local(hub_url)
    assert (events, tasks) == (out["acked"], 20)
    assert local_checkpoint(hub_url) == out["acked"]


def test_resend_changes_nothing(hub_url):
    """The hub's ack lost (a sync killed between the hub's COMMIT and anything else, or a reset ack): everything is
    sent again, and nothing is inserted twice."""
    make_tasks(10)
    first = sync_once(hub_url)
    bid = board_id()
    before = hub_rows(hub_url, "SELECT * FROM hermes_hub.events WHERE board_id = %s ORDER BY id", (bid,))
    hub_exec(hub_url, "UPDATE hermes_hub.acks SET last_event_id = 0 WHERE board_id = %s", (bid,))
    again = sync_once(hub_url)
    assert again["sent"] == first["sent"] and again["inserted"] == 0
    after = hub_rows(hub_url, "SELECT * FROM hermes_hub.events WHERE board_id = %s ORDER BY id", (bid,))
    assert after == before
    assert_hub_equals_local(hub_url)


def test_batch_applied_twice_is_idempotent(hub_url):
    """The same batch through writes.apply_batch twice: the second inserts nothing and the hub is unchanged."""
    make_tasks(5)
    sync_once(hub_url)
    bid = board_id()
    with Board.open() as b:
        events = b.db.rows("SELECT id, task_id, run_id, kind, payload, created_at FROM events ORDER BY id")
        tasks = b.db.rows("SELECT * FROM tasks")
    link = HubLink(hub_url)
    try:
        from hermes_cli.kanban.hub import lease

        got = lease.acquire(link, bid)
        assert got.token is not None
        snapshot = hub_rows(hub_url, "SELECT * FROM hermes_hub.tasks WHERE board_id = %s ORDER BY id", (bid,))
        applied = writes.apply_batch(link, bid, got.token, events, tasks, [], events[-1]["id"])
        assert applied.inserted == 0 and applied.acked == events[-1]["id"]
        assert hub_rows(hub_url, "SELECT * FROM hermes_hub.tasks WHERE board_id = %s ORDER BY id", (bid,)) \
            == [{**r, "synced_at": r2["synced_at"]} for r, r2 in zip(snapshot, hub_rows(
                hub_url, "SELECT * FROM hermes_hub.tasks WHERE board_id = %s ORDER BY id", (bid,)), strict=True)]
    finally:
        link.close()
    assert_hub_equals_local(hub_url)


def test_two_syncs_at_once_one_runs_one_skips(hub_url):
    make_tasks(3)
    follower = spawn("sync", "--hub", hub_url, "--follow", "--json")
    try:
        wait_for(lambda: local_checkpoint(hub_url) is not None, 30, "the follower to start")
        bid = board_id()
        wait_for(lambda: (lease_row(hub_url, bid) or {}).get("holder_pid") == follower.pid, 30, "the lease")
        p = hermes("sync", "--hub", hub_url, "--once", "--json")
        assert p.returncode == 0, p.stderr
        out = last_json(p.stdout)
        assert out["skipped"] is True and out["status"] == "skipped"
        assert out["holder"]["pid"] == follower.pid
        assert out["sent"] == 0
    finally:
        follower.send_signal(signal.SIGTERM)
        stdout, stderr = follower.communicate(timeout=60)
    assert follower.returncode == 0, stderr
    assert last_json(stdout)["reason"] == "signal"
    assert_hub_equals_local(hub_url)


def _fake_holder(url: str, bid: str, *, refreshed_ago: float, acquired_ago: float) -> None:
    """A lease held by a sync on another host (so the dead-holder rule cannot apply)."""
    hub_exec(url, "INSERT INTO hermes_hub.sync_leases(board_id) VALUES (%s) ON CONFLICT DO NOTHING", (bid,))
    hub_exec(url, "UPDATE hermes_hub.sync_leases SET token = token + 1, holder_host = 'elsewhere', holder_pid = 4242, "
                  "holder_started = 1.0, acquired_at = extract(epoch FROM clock_timestamp()) - %s, "
                  "refreshed_at = extract(epoch FROM clock_timestamp()) - %s WHERE board_id = %s",
             (acquired_ago, refreshed_ago, bid))


def test_break_lock_frees_only_a_lease_older_than_max_age(hub_url):
    make_tasks(3)
    sync_once(hub_url)
    bid = board_id()
    with Board.open() as b:
        b.create_task("after the first sync")
    # Acquired an hour ago but refreshed 5 s ago: alive. --max-age judges the last refresh, never the acquire time.
    _fake_holder(hub_url, bid, refreshed_ago=5, acquired_ago=3600)
    out = sync_once(hub_url, "--break-lock", "--max-age", "60")
    assert out["skipped"] is True and out["lock_broken"] is None
    assert lease_row(hub_url, bid)["holder_host"] == "elsewhere"
    # Past the grace (30 s) but younger than --max-age: still not broken, and the normal takeover rule applies.
    _fake_holder(hub_url, bid, refreshed_ago=45, acquired_ago=3600)
    out = sync_once(hub_url, "--break-lock", "--max-age", "120")
    assert out["lock_broken"] is None and out["took_over"] == "stale" and out["skipped"] is False
    # Refreshed 10 minutes ago: broken, then the sync runs.
    _fake_holder(hub_url, bid, refreshed_ago=600, acquired_ago=600)
    out = sync_once(hub_url, "--break-lock", "--max-age", "120")
    assert out["lock_broken"]["host"] == "elsewhere" and out["skipped"] is False
    assert lease_row(hub_url, bid)["holder_host"] is None  # released at exit
    assert_hub_equals_local(hub_url)


def test_a_fresh_lease_of_another_host_makes_a_sync_skip(hub_url):
    make_tasks(2)
    sync_once(hub_url)
    bid = board_id()
    _fake_holder(hub_url, bid, refreshed_ago=1, acquired_ago=1)
    out = sync_once(hub_url)
    assert out["skipped"] is True and out["holder"]["host"] == "elsewhere"


def test_dead_holder_on_this_host_is_taken_over_at_once(hub_url):
    make_tasks(2)
    follower = spawn("sync", "--hub", hub_url, "--follow", "--json")
    wait_for(lambda: local_checkpoint(hub_url) is not None, 30, "the follower to start")
    bid = board_id()
    wait_for(lambda: (lease_row(hub_url, bid) or {}).get("holder_pid") == follower.pid, 30, "the lease")
    follower.kill()
    follower.communicate(timeout=30)
    assert lease_row(hub_url, bid)["holder_pid"] == follower.pid  # SIGKILL: never released
    out = sync_once(hub_url)
    assert out["took_over"] == "dead" and out["skipped"] is False


def test_sigterm_keeps_the_checkpoint_and_releases_the_lease(hub_url):
    make_tasks(2)
    follower = spawn("sync", "--hub", hub_url, "--follow", "--json")
    writer = spawn_writer(3000, pause=0.002)
    try:
        wait_for(lambda: local_checkpoint(hub_url) is not None, 30, "the follower to start")
        bid = board_id()
        wait_for(lambda: hub_ack(hub_url, bid) > 200, 60, "the follower to send events")
        follower.send_signal(signal.SIGTERM)
        stdout, stderr = follower.communicate(timeout=60)
    finally:
        writer.kill()
        writer.communicate(timeout=30)
    assert follower.returncode == 0, stderr
    out = last_json(stdout)
    assert out["status"] == "stopped" and out["reason"] == "signal"
    # The checkpoint written at exit is exactly the hub's ack; the lease is free for the next sync.
    assert local_checkpoint(hub_url) == hub_ack(hub_url, bid) == out["acked"] > 0
    assert lease_row(hub_url, bid)["holder_host"] is None
    sync_once(hub_url)
    assert_hub_equals_local(hub_url)


def test_timeout_stops_gracefully_and_keeps_the_checkpoint(hub_url):
    make_tasks(2)
    writer = spawn_writer(3000, pause=0.002)
    try:
        p = hermes("sync", "--hub", hub_url, "--follow", "--timeout", "3", "--json")
    finally:
        writer.kill()
        writer.communicate(timeout=30)
    assert p.returncode == 0, p.stderr
    out = last_json(p.stdout)
    assert out["status"] == "stopped" and out["reason"] == "timeout" and out["sent"] > 0
    bid = board_id()
    assert local_checkpoint(hub_url) == hub_ack(hub_url, bid) == out["acked"]
    again = sync_once(hub_url)
    assert again["inserted"] == again["sent"]  # it resumed after the ack: nothing was sent twice
    assert_hub_equals_local(hub_url)


def spawn_writer(events: int, pause: float = 0.0, slug: str = "default"):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "tests.hub.writer", slug, str(events), str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                            cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))


def test_hub_accepts_writers_of_n_and_n_minus_1_and_refuses_older(hub_url):
    link = HubLink(hub_url)
    try:
        assert schema.prepare(link) == schema.LATEST
        # A hub one version ahead of us (a newer hermes migrated it): we still write.
        hub_exec(hub_url, "INSERT INTO hermes_hub.schema_migrations VALUES (%s, 0)", (schema.LATEST + 1,))
        assert schema.prepare(link) == schema.LATEST + 1
        make_tasks(2)
        assert sync_once(hub_url)["status"] == "synced"
        # Two versions ahead: refused, with both versions named.
        hub_exec(hub_url, "INSERT INTO hermes_hub.schema_migrations VALUES (%s, 0)", (schema.LATEST + 2,))
        with pytest.raises(HubVersionRefused):
            schema.prepare(link)
    finally:
        link.close()
    p = hermes("sync", "--hub", hub_url, "--once")
    assert p.returncode == 4
    assert p.stderr.strip().splitlines() == [
        f"error: hub {redact(hub_url)} has hub schema v{schema.LATEST + 2} and accepts writers of "
        f"v{schema.LATEST + 1} and v{schema.LATEST + 2}; this hermes writes v{schema.LATEST}: upgrade hermes-kanban "
        "on this host (pip install -U hermes-kanban)"]


def test_gc_keeps_events_the_hub_has_not_acknowledged(hub_url, monkeypatch):
    make_tasks(6)
    monkeypatch.setenv("HERMES_KANBAN_HUB_URL", hub_url)
    with Board.open() as b:
        total = b.db.value("SELECT count(*) FROM events")
        # A hub is configured but nothing was acknowledged yet: gc removes nothing, even at 0 days' retention.
        assert b.gc(event_retention_days=0)["events_removed"] == 0
        assert b.db.value("SELECT count(*) FROM events") == total
    out = sync_once(hub_url)
    with Board.open() as b:
        t, _ = b.create_task("after the sync")
        claim = b.claim(t.id, worker="w")
        assert claim is not None
        b.complete(claim.task_id, claim.run_id)
        removed = b.gc(event_retention_days=0)
        # Acknowledged events of finished tasks may go; the new ones after the checkpoint stay.
        assert removed["kept_after_event"] == out["acked"]
        assert b.db.value("SELECT count(*) FROM events WHERE task_id = ?", (t.id,)) == 3
        assert b.db.value("SELECT count(*) FROM events WHERE id <= ?", (out["acked"],)) < total
    p = hermes("sync", "--once", "--json")
    assert p.returncode == 0 and last_json(p.stdout)["inserted"] == 3


def test_sync_off_sends_nothing_and_breaks_nothing(hub_url):
    make_tasks(2)
    p = hermes("sync", "--hub", hub_url, "--once", "--json", env={"HERMES_KANBAN_SYNC": "off"})
    assert p.returncode == 0
    assert last_json(p.stdout) == {"skipped": True, "status": "skipped", "reason": "off"}
    assert hub_rows(hub_url, "SELECT to_regclass('hermes_hub.events') AS t")[0]["t"] is None
    assert hermes("create", "still works", env={"HERMES_KANBAN_SYNC": "off"}).returncode == 0


def test_no_hub_configured_is_a_usage_error():
    p = hermes("sync", "--once")
    assert p.returncode == 2
    assert p.stderr.startswith("error: no hub configured: pass --hub URL, set HERMES_KANBAN_HUB_URL")


def test_permission_failure_is_one_loud_line_and_shown_by_doctor(hub_url):
    role = f"nopriv_{int(time.time() * 1000) % 10**9}"
    hub_exec(hub_url, f"CREATE ROLE {role} LOGIN")
    url = hub_url.replace("postgresql://postgres@", f"postgresql://{role}@")
    make_tasks(1)
    p = hermes("sync", "--hub", url, "--once")
    assert p.returncode == 4
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: hub {redact(url)} refused us: ") and \
        "permission denied" in lines[0]
    d = hermes("doctor", "--json", env={"HERMES_KANBAN_HUB_URL": url})
    sync = [f for f in last_json(d.stdout)["findings"] if f["check"] == "sync"]
    assert sync and sync[0]["level"] == "warn" and "permission denied" in sync[0]["message"]


def test_gc_with_an_unreadable_hub_configuration_keeps_every_event(monkeypatch):
    """A hub may be meant but its URL is malformed: gc neither fails nor trims (nothing has been acknowledged)."""
    make_tasks(4)
    monkeypatch.setenv("HERMES_KANBAN_HUB_URL", "not-a-url")
    with Board.open() as b:
        total = b.db.value("SELECT count(*) FROM events")
        assert b.gc(event_retention_days=0)["events_removed"] == 0
        assert b.db.value("SELECT count(*) FROM events") == total
    monkeypatch.delenv("HERMES_KANBAN_HUB_URL")
    with Board.open() as b:
        assert b.gc(event_retention_days=0)["events_removed"] > 0  # no hub at all: the finished tasks' events go
