"""The sync and hub commands end to end: --all-boards (one process per board), repeated checkpoint failures stop the
sync with exit 4 and show in doctor, and `hub boards|list|show|stats|events` read the fleet."""

from __future__ import annotations

import json
import subprocess
import sys

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.hubconf import redact
from hermes_cli.kanban.hub.sync import CHECKPOINT_FAILURES_MAX

from .conftest import assert_hub_equals_local, board_id, hermes, hub_ack, last_json, spawn, wait_for
from .test_sync import _fake_holder, make_tasks, sync_once


def test_all_boards_runs_each_board_in_its_own_process(hub_url):
    for slug in ("alpha", "beta", "gamma"):
        assert hermes("boards", "create", slug).returncode == 0
        make_tasks(3, slug)
    sync_once(hub_url, "--board", "gamma")
    # gamma's lease is held by a live sync elsewhere: gamma skips, the others sync; the run still exits 0.
    _fake_holder(hub_url, board_id("gamma"), refreshed_ago=1, acquired_ago=1)
    with Board.open("gamma") as b:
        b.create_task("not sent yet")
    p = hermes("sync", "--hub", hub_url, "--all-boards", "--once", "--json")
    assert p.returncode == 0, p.stderr
    out = last_json(p.stdout)
    runs = {r["board"]: r for r in out["boards"]}
    assert set(runs) >= {"alpha", "beta", "gamma"}
    assert runs["alpha"]["result"]["status"] == runs["beta"]["result"]["status"] == "synced"
    assert runs["gamma"]["result"]["skipped"] is True
    pids = {runs[s]["result"]["board_id"] for s in ("alpha", "beta")}
    assert len(pids) == 2
    assert_hub_equals_local(hub_url, "alpha")
    assert_hub_equals_local(hub_url, "beta")
    # The hub URL reached the children through the environment, never their command line.
    assert hub_url not in p.stderr


def test_repeated_checkpoint_failures_stop_the_sync_with_an_error(hub_url):
    make_tasks(4)
    sync_once(hub_url)
    make_tasks(4)
    with Board.open() as b:
        db_path = str(b.paths.db)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import apsw, sys, time\nc = apsw.Connection(sys.argv[1])\n"
         "c.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\ntime.sleep(120)\n", db_path],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        p = hermes("sync", "--hub", hub_url, "--follow", "--timeout", "90", "--quiet",
                   env={"HERMES_KANBAN_BUSY_TIMEOUT_MS": "20"})
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    assert p.returncode == 4, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: sync of board default to {redact(hub_url)} stopped: {CHECKPOINT_FAILURES_MAX} consecutive "
        "checkpoint writes failed"), lines
    # The hub has everything (its ack is the truth); the board could not record it, and doctor says so.
    with Board.open() as b:
        last = int(b.db.value("SELECT max(id) FROM events"))
    assert hub_ack(hub_url, board_id()) == last
    doc = hermes("doctor", "--json", env={"HERMES_KANBAN_HUB_URL": hub_url})
    sync = [f for f in last_json(doc.stdout)["findings"] if f["check"] == "sync"][0]
    assert sync["level"] == "warn" and "checkpoint" in sync["message"] and doc.returncode == 1
    # Once the board takes writes again, the next sync records the checkpoint and clears the error.
    out = sync_once(hub_url)
    assert out["sent"] == 0 and out["pending"] == 0
    doc = hermes("doctor", "--json", env={"HERMES_KANBAN_HUB_URL": hub_url})
    sync = [f for f in last_json(doc.stdout)["findings"] if f["check"] == "sync"][0]
    assert sync["level"] == "ok" and sync["data"]["pending"] == 0 and sync["data"]["last_error"] is None


def test_follow_shows_a_change_on_the_hub_quickly(hub_url):
    make_tasks(1)
    follower = spawn("sync", "--hub", hub_url, "--follow", "--json", "--quiet")
    try:
        wait_for(lambda: hub_ack(hub_url, board_id()) > 0 if _has_id() else False, 60, "the first sync")
        with Board.open() as b:
            t, _ = b.create_task("watch me")
            last = int(b.db.value("SELECT max(id) FROM events"))
        # The doorbell wakes the follower; the bound here is the 5 s (figures: bench/hub_sync.py).
        wait_for(lambda: hub_ack(hub_url, board_id()) >= last, 5, "the change to reach the hub")
    finally:
        follower.terminate()
        follower.communicate(timeout=60)
    assert follower.returncode == 0


def _has_id() -> bool:
    with Board.open() as b:
        return b.db.value("SELECT value FROM meta WHERE key = 'board_id'") is not None


def test_hub_commands_read_the_fleet(hub_url):
    for slug in ("alpha", "beta"):
        assert hermes("boards", "create", slug).returncode == 0
        make_tasks(4, slug)
        sync_once(hub_url, "--board", slug)
    with Board.open("alpha") as b:
        tid = b.db.value("SELECT id FROM tasks ORDER BY id LIMIT 1")
    boards = json.loads(hermes("hub", "boards", "--hub", hub_url, "--json").stdout)
    assert sorted(b["slug"] for b in boards) == ["alpha", "beta"] and all(b["tasks"] == 4 for b in boards)
    listed = hermes("hub", "list", "--hub", hub_url, "--board", "alpha", "--status", "done", "--json")
    rows = json.loads(listed.stdout)
    assert len(rows) == 2 and {r["board"] for r in rows} == {"alpha"} and {r["status"] for r in rows} == {"done"}
    shown = last_json(hermes("hub", "show", tid, "--hub", hub_url, "--json").stdout)
    assert shown["id"] == tid and shown["events"][0]["kind"] == "created"
    stats = last_json(hermes("hub", "stats", "--hub", hub_url, "--json").stdout)
    assert stats["totals"] == {"done": 4, "ready": 4} and stats["board_count"] == 2
    evs = json.loads(hermes("hub", "events", "--hub", hub_url, "--board", "beta", "--limit", "3", "--json").stdout)
    assert [e["id"] for e in evs] == [1, 2, 3] and {e["board"] for e in evs} == {"beta"}
    human = hermes("hub", "boards", "--hub", hub_url)
    assert human.returncode == 0 and ":alpha  4 tasks" in human.stdout
    missing = hermes("hub", "list", "--hub", hub_url, "--board", "nope", "--json")
    assert missing.returncode == 1
    assert missing.stderr.strip() == \
        f"error: board nope is not on hub {redact(hub_url)} (see: hermes kanban hub boards)"
    assert last_json(missing.stdout)["error"]["code"] == "not_found"


def test_hub_commands_on_an_empty_database_say_what_to_do(hub_url):
    p = hermes("hub", "boards", "--hub", hub_url)
    assert p.returncode == 1
    assert p.stderr.strip() == (f"error: hub {redact(hub_url)} has no hub schema yet: nothing has synced to it "
                                "(run: hermes kanban sync --hub URL on a host with a board)")


def test_all_boards_follow_keeps_every_board_synced_until_its_timeout(hub_url):
    for slug in ("alpha", "beta"):
        assert hermes("boards", "create", slug).returncode == 0
        make_tasks(2, slug)
    p = spawn("sync", "--hub", hub_url, "--all-boards", "--follow", "--timeout", "8", "--json", "--quiet")
    try:
        wait_for(lambda: all(_acked(hub_url, s) > 0 for s in ("alpha", "beta")), 60, "both boards' first sync")
        with Board.open("beta") as b:
            b.create_task("later")
            last = int(b.db.value("SELECT max(id) FROM events"))
        wait_for(lambda: _acked(hub_url, "beta") >= last, 10, "beta's new event on the hub")
    finally:
        out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    runs = {r["board"]: r for r in last_json(out)["boards"]}
    assert {runs[s]["result"]["reason"] for s in ("alpha", "beta")} == {"timeout"}
    assert_hub_equals_local(hub_url, "alpha")
    assert_hub_equals_local(hub_url, "beta")


def _acked(url: str, slug: str) -> int:
    with Board.open(slug) as b:
        bid = b.db.value("SELECT value FROM meta WHERE key = 'board_id'")
    return 0 if bid is None else hub_ack(url, str(bid))
