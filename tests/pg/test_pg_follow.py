"""`events --follow` and `notify-subscribe` on a PostgreSQL board. A writer on this host rings the local doorbell; a
writer on another host (another HERMES_HOME: its own board directory, so no shared FIFO) does not, and the follower
still gets every event, in order, by its bounded fallback poll (readers.RECHECK_S). LISTEN/NOTIFY wake-ups are
live/'s business (another change); this only shows the commands are correct on PostgreSQL without them."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from hermes_cli.kanban.live.readers import RECHECK_S

from ..cli.conftest import HERMES, run_hermes


def test_follow_a_subscription_with_writers_on_two_hosts(pg_url: str, hermes_home: Path) -> None:
    sub = run_hermes("kanban", "notify-subscribe", "ops", "--kinds", "created,completed", "--json")
    assert sub.code == 0 and sub.json()["created"] is True, sub
    follower = subprocess.Popen(
        [HERMES, "kanban", "events", "--follow", "--subscription", "ops", "--json", "--limit", "4", "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        time.sleep(1.0)  # the follower is up and waiting (a missed start would only mean it replays from its cursor)
        other_host = {"HERMES_HOME": str(hermes_home.parent / "other-host")}
        started = time.monotonic()
        remote = [run_hermes("kanban", "create", f"remote {i}", "--json", env=other_host).json()["id"]
                  for i in range(2)]
        done = run_hermes("kanban", "complete", remote[0], "--json", env=other_host)
        assert done.code == 0, done
        local = run_hermes("kanban", "create", "local", "--json").json()["id"]
        out, err = follower.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e["task_id"]) for e in events] == [
        ("created", remote[0]), ("created", remote[1]), ("completed", remote[0]), ("created", local)]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    # bounded: the fallback poll, not a hang (generous: the machine is shared)
    assert elapsed < 30 * RECHECK_S
    # the subscription's cursor is kept in the board: a restarted follower resumes after the last printed event
    listed = run_hermes("kanban", "notify-list", "--json").json()
    assert [(s["name"], s["cursor"], s["pending"]) for s in listed] == [("ops", events[-1]["id"], 0)]
