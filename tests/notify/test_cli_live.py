"""CLI: notify-subscribe / notify-list / notify-unsubscribe, `events --follow`, and `tui` refusing what it cannot do.
Exact output and exit codes; followers run in-process (main thread) or as real processes with real signals."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time

from hermes_cli.kanban import Board
from hermes_cli.kanban.live.readers import get_subscription

from .conftest import fifos, hermes_argv, invoke, lines_json, run

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_notify_subscribe_list_unsubscribe_human(board: Board) -> None:
    board.create_task("x")
    r = invoke("notify-subscribe", "pager", "--kinds", "completed,gave_up")
    assert r.code == 0 and r.err == ""
    # cursor 2: the newest event when it was made, which is its own `subscribed` event
    assert re.fullmatch(rf"subscribed: pager  cursor 2  kinds completed,gave_up  pending 0  updated {ISO}\n", r.out)
    r = invoke("notify-subscribe", "pager")
    assert re.fullmatch(rf"already subscribed: pager  cursor 2  kinds completed,gave_up  pending 0  updated {ISO}\n",
                        r.out)
    r = invoke("notify-list")
    assert re.fullmatch(rf"pager  cursor 2  kinds completed,gave_up  pending 0  updated {ISO}\n", r.out), r.out
    r = invoke("notify-unsubscribe", "pager")
    assert (r.code, r.out, r.err) == (0, "unsubscribed: pager\n", "")
    r = invoke("notify-list")
    assert (r.code, r.out) == (0, "no subscriptions (see: hermes kanban notify-subscribe)\n")


def test_notify_commands_json(board: Board) -> None:
    r = invoke("notify-subscribe", "all", "--after", "0", "--json")
    data = r.json()
    assert r.code == 0 and data["name"] == "all" and data["cursor"] == 0 and data["kinds"] is None
    assert data["created"] is True and data["pending"] == 1 and re.fullmatch(ISO, data["created_at"])
    listed = invoke("notify-list", "--json").json()
    assert [(s["name"], s["cursor"], s["pending"]) for s in listed] == [("all", 0, 1)]  # its own subscribed event
    gone = invoke("notify-unsubscribe", "all", "--json").json()
    assert gone["name"] == "all" and gone["removed"] is True


def test_notify_errors_are_one_line_and_change_nothing(board: Board) -> None:
    before = board.last_event_id()
    r = invoke("notify-unsubscribe", "nope")
    assert (r.code, r.out, r.err) == (1, "", "error: subscription nope not found (see: hermes kanban notify-list)\n")
    r = invoke("notify-unsubscribe", "nope", "--json")
    assert r.code == 1 and r.json() == {"error": {
        "code": "not_found", "message": "subscription nope not found (see: hermes kanban notify-list)"}}
    r = invoke("notify-subscribe", "Bad Name")
    assert r.code == 1 and r.err == ("error: invalid subscription name 'Bad Name': use 1-64 chars of a-z, 0-9, '_', "
                                     "'.', ':' or '-', starting with a letter or digit\n")
    r = invoke("notify-subscribe", "ok", "--kinds", "bad kind")
    assert r.code == 1
    assert r.err.startswith("error: invalid event kind 'bad kind': use one of created, commented, ")
    r = invoke("notify-subscribe", "ok", "--after", "-1")
    assert r.code == 1 and r.err == "error: invalid cursor -1: event ids start at 1 (use 0 to replay everything)\n"
    assert board.last_event_id() == before and invoke("notify-list", "--json").json() == []


def test_events_usage_errors(board: Board) -> None:
    r = invoke("events", "--follow", "--task", "t_0123456789ab")
    assert (r.code, r.err) == (2, "error: --task cannot be combined with --follow (filter the stream with --kinds)\n")
    r = invoke("events", "--timeout", "1")
    assert (r.code, r.err) == (2, "error: --timeout only applies with --follow\n")
    r = invoke("events", "--follow", "--timeout", "0")
    assert (r.code, r.err) == (2, "error: invalid --timeout 0.0: must be more than 0 seconds\n")


def test_events_follow_syncs_the_wal_before_it_prints(board: Board, monkeypatch) -> None:
    """A follower hands events to another program, so it prints only what is on disk: with group commit another
    writer's commit is visible up to one fsync before it is durable (docs/guarantees.md)."""
    from hermes_cli.kanban.store import wal_sync

    board.create_task("x")
    seen: list[str] = []
    real_sync = wal_sync.sync

    def sync(conn):
        real_sync(conn)
        seen.append("sync")

    monkeypatch.setattr(wal_sync, "sync", sync)
    from hermes_cli.cli import events as events_cli

    real_batch = events_cli.write_batch

    def write_batch(evs, as_json):
        seen.append(f"print {len(evs)}")
        return real_batch(evs, as_json)

    monkeypatch.setattr(events_cli, "write_batch", write_batch)
    r = invoke("events", "--follow", "--after", "0", "--timeout", "0.3", "--json")
    assert r.code == 0 and [e["kind"] for e in lines_json(r.out)] == ["created"]
    assert seen == ["sync", "print 1"]


def test_events_without_follow_is_unchanged(board: Board) -> None:
    task, _ = board.create_task("x")
    r = invoke("events", "--json")
    assert r.code == 0 and [e["kind"] for e in r.json()] == ["created"]
    assert invoke("events", "--after", "1").out == "no events\n"


def test_events_follow_streams_json_lines_until_limit(board: Board) -> None:
    start = board.last_event_id()
    done = threading.Event()

    def writer() -> None:
        with Board.open() as b:
            while not fifos(b.paths.notify_dir):
                time.sleep(0.01)
            t, _ = b.create_task("first")
            b.comment(t.id, "noise")
            b.complete(t.id, summary="shipped")
            b.create_task("not printed: past the limit")
        done.set()

    th = threading.Thread(target=writer)
    th.start()
    r = invoke("events", "--follow", "--after", str(start), "--kinds", "created,completed", "--limit", "2", "--json")
    th.join(60)
    assert r.code == 0, r.err
    events = lines_json(r.out)
    assert [e["kind"] for e in events] == ["created", "completed"]
    assert events[1]["payload"]["summary"] == "shipped"
    assert fifos(board.paths.notify_dir) == []  # the follower removed its FIFO


def test_events_follow_timeout_ends_quietly(board: Board) -> None:
    r = invoke("events", "--follow", "--timeout", "0.2")
    assert (r.code, r.out, r.err) == (0, "", "")


def test_events_subscription_without_follow_peeks_without_acknowledging(board: Board) -> None:
    invoke("notify-subscribe", "s", "--kinds", "completed")
    task, _ = board.create_task("x")
    board.complete(task.id, summary="yes")
    cursor = get_subscription(board, "s").cursor
    r = invoke("events", "--subscription", "s", "--json")
    assert [e["kind"] for e in r.json()] == ["completed"]
    assert get_subscription(board, "s").cursor == cursor


def test_events_follow_with_subscription_acknowledges_what_it_printed(board: Board) -> None:
    invoke("notify-subscribe", "s", "--kinds", "completed")
    task, _ = board.create_task("x")
    board.complete(task.id, summary="yes")
    r = invoke("events", "--follow", "--subscription", "s", "--limit", "1", "--json")
    assert [e["task_id"] for e in lines_json(r.out)] == [task.id]
    assert get_subscription(board, "s").cursor == board.last_event_id()
    assert invoke("events", "--follow", "--subscription", "s", "--timeout", "0.2").out == ""


def test_sigterm_stops_a_follower_gracefully(board: Board) -> None:
    """A real `events --follow` process: SIGTERM finishes the batch, acknowledges it, removes the FIFO, exits 0."""
    invoke("notify-subscribe", "s")
    p = subprocess.Popen(hermes_argv("events", "--follow", "--subscription", "s", "--json"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not fifos(board.paths.notify_dir) and time.monotonic() < deadline:
            time.sleep(0.02)
        task, _ = board.create_task("seen")
        assert p.stdout is not None
        first = json.loads(p.stdout.readline())
        assert first["task_id"] == task.id
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert (p.returncode, out, err) == (0, "", "")
    assert get_subscription(board, "s").cursor == first["id"]
    assert fifos(board.paths.notify_dir) == []


def test_follow_output_closed_early_is_not_an_error(board: Board) -> None:
    """`events --follow | head -1`: once the reader of its stdout is gone, the next write ends the follower with
    exit 0 and no traceback."""
    start = board.last_event_id()
    board.create_task("first")
    p = subprocess.Popen(hermes_argv("events", "--follow", "--after", str(start), "--timeout", "60"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stderr is not None
        assert "created" in p.stdout.readline()
        p.stdout.close()  # like `head -1` exiting
        board.create_task("second: written into a closed pipe")
        assert p.wait(30) == 0
        assert p.stderr.read() == ""
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stderr is not None:
            p.stderr.close()
    assert fifos(board.paths.notify_dir) == []


def test_tui_refuses_json_and_non_terminals(board: Board) -> None:
    r = invoke("tui", "--json")
    assert r.code == 2
    assert r.err == ("error: tui is interactive and has no --json output (for a JSON stream use: "
                     "hermes kanban events --follow --json)\n")
    r = invoke("tui", "--subscription", "Bad Name")
    assert r.code == 1 and r.err.startswith("error: invalid subscription name 'Bad Name'")
    r = run("tui")  # stdin/stdout are pipes here
    assert (r.code, r.err) == (2, "error: tui needs a terminal (for a stream of events use: hermes kanban events "
                                  "--follow)\n")


def test_the_cli_never_imports_textual() -> None:
    code = ("import sys; from hermes_cli.main import hermes; import hermes_cli.cli.live, "
            "hermes_cli.kanban.live.readers, hermes_cli.kanban.views.snapshot; print('textual' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "False", p.stderr
