"""Wake-ups on a PostgreSQL board: LISTEN/NOTIFY on a dedicated connection (live/pg_listen.py).

A reader on one host must be woken by a write made anywhere (here: another process, as another host would), without
waiting for its fallback poll; the events cursor stays the truth when notifications are lost (connection killed,
LISTEN turned off)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.live.pg_listen import PgBell
from hermes_cli.kanban.live.readers import EventReader

#: far longer than any wake-up by notification; a reader woken only by its timeout would take this long
LONG_WAIT_S = 20.0


def create_elsewhere(title: str) -> None:
    """A write from another process (what a writer on another host is to us)."""
    code = ("from hermes_cli.kanban import Board\n"
            f"with Board.open() as b: b.create_task({title!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_reader_is_woken_by_a_write_in_another_process(pg_url: str) -> None:
    with Board.open() as b, EventReader(b, name="t") as reader:
        assert isinstance(reader.doorbell, PgBell) and reader.doorbell.mode == "listen"
        assert reader.wait(0.5) == []  # caught up: the next wait blocks
        create_elsewhere("from afar")
        started = time.monotonic()
        events = reader.wait(LONG_WAIT_S)
        took = time.monotonic() - started
        assert [e.kind for e in events] == ["created"]
        assert took < LONG_WAIT_S / 2, f"woken after {took:.1f}s: by the timeout, not by the notification"
        assert reader.doorbell.received >= 1


def test_the_listener_reconnects_after_its_backend_is_terminated(pg_url: str) -> None:
    with Board.open() as b, EventReader(b, name="t") as reader:
        bell = reader.doorbell
        assert isinstance(bell, PgBell)
        assert reader.wait(0.5) == []
        pid = bell.backend_pid
        assert pid is not None
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert killed == (True,)
        # The drop itself wakes the reader (it may have missed events), then the thread listens again.
        deadline = time.monotonic() + LONG_WAIT_S
        while bell.reconnects < 1 and time.monotonic() < deadline:
            reader.wait(0.2)
        assert bell.reconnects >= 1, "the listener did not reconnect"
        received = bell.received
        create_elsewhere("after the reconnect")
        events = reader.wait(LONG_WAIT_S)
        assert [e.kind for e in events] == ["created"]
        assert bell.received > received


def test_with_listen_off_the_fallback_poll_still_delivers_every_event(pg_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_KANBAN_PG_LISTEN", "0")
    with Board.open() as b, EventReader(b, name="t") as reader:
        assert isinstance(reader.doorbell, PgBell) and reader.doorbell.mode == "poll"
        assert reader.wait(0.2) == []
        b.create_task("one")
        b.create_task("two")
        events = reader.wait(0.3)  # nothing wakes it: the timeout does, and the cursor finds both
        assert [e.kind for e in events] == ["created", "created"]
        assert reader.doorbell.received == 0


def test_a_poke_wakes_a_waiting_reader(pg_url: str) -> None:
    with Board.open() as b, EventReader(b, name="t") as reader:
        assert reader.wait(0.5) == []
        reader.poke()
        started = time.monotonic()
        assert reader.wait(LONG_WAIT_S) == []
        assert time.monotonic() - started < LONG_WAIT_S / 2


def test_events_follow_on_a_postgresql_board_prints_a_write_from_elsewhere(pg_url: str) -> None:
    """`hermes kanban events --follow` (a real process) follows a PostgreSQL board: it listens (its LISTEN shows on
    the server), prints a write made by another connection, and warns about nothing (its pooler probe passed)."""
    with Board.open() as b:
        b.create_task("before")  # the board exists before the follower starts
    follower = subprocess.Popen([sys.executable, "-m", "hermes_cli.main", "kanban", "events", "--follow", "--json",
                                 "--kinds", "created", "--limit", "1", "--timeout", str(LONG_WAIT_S)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The follower reads from the newest event at its start: wait until it is listening (its LISTEN, then its
        # probe, show in pg_stat_activity), so the write below is after its cursor.
        with psycopg.connect(pg_url, autocommit=True) as admin:
            deadline = time.monotonic() + LONG_WAIT_S
            while not admin.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' "
                                    "OR query LIKE 'SELECT pg_listening_channels%'").fetchone()[0]:  # type: ignore[index]
                assert follower.poll() is None, follower.communicate()
                assert time.monotonic() < deadline, "the follower never listened"
                time.sleep(0.05)
        with Board.open() as b:
            task, _ = b.create_task("followed")
        out, err = follower.communicate(timeout=LONG_WAIT_S + 30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [(e["kind"], e["task_id"]) for e in lines] == [("created", task.id)]
    assert "warning" not in err
