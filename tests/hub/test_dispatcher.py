"""The long-running dispatcher runs the hub sync beside it when a hub is configured, and stops it when it stops."""

from __future__ import annotations

import signal

from hermes_cli.kanban import Board

from .conftest import board_id, hermes, hub_ack, lease_row, spawn, wait_for


def test_dispatcher_runs_the_hub_sync_in_the_background(hub_url):
    assert hermes("create", "first").returncode == 0
    dispatcher = spawn("daemon", "--json", env={"HERMES_KANBAN_HUB_URL": hub_url})
    try:
        wait_for(lambda: _synced_to(hub_url, 1), 60, "the background sync to send the first event")
        with Board.open() as b:
            b.create_task("second")
            last = int(b.db.value("SELECT max(id) FROM events"))
        wait_for(lambda: _synced_to(hub_url, last), 30, "the background sync to send a new event")
        holder = lease_row(hub_url, board_id())
        assert holder is not None and holder["holder_pid"] not in (None, dispatcher.pid)  # its own process
    finally:
        dispatcher.send_signal(signal.SIGTERM)
        _, err = dispatcher.communicate(timeout=60)
    assert dispatcher.returncode == 0, err
    assert "hub sync started" in err
    # Stopped with the dispatcher: gracefully (the lease is released, not left to expire).
    assert lease_row(hub_url, board_id())["holder_host"] is None


def test_no_hub_no_background_sync():
    assert hermes("create", "first").returncode == 0
    p = hermes("daemon", "--timeout", "2", "--json")
    assert p.returncode == 0, p.stderr
    assert "hub sync" not in p.stderr


def _synced_to(url: str, event_id: int) -> bool:
    with Board.open() as b:
        bid = b.db.value("SELECT value FROM meta WHERE key = 'board_id'")
    return bid is not None and hub_ack(url, str(bid)) >= event_id
