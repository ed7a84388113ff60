"""The writers' flock queue (store/write_queue.py): a writer behind another hermes writer sleeps in the kernel
instead of polling SQLite's lock, and a holder that stops without dying cannot hang the others.

Real processes: a holder process opens the board and keeps a write transaction open (a sleep inside Database.write,
or SIGSTOP); the writer under test counts how often SQLite calls its busy handler.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hermes_cli.kanban import Board

HOLDER = r"""
import sys, time
from hermes_cli.kanban import Board
b = Board.open(db_path=sys.argv[1])
hold = float(sys.argv[2])

def tx():
    b.create_task("held")
    print("holding", flush=True)
    time.sleep(hold)

b.db.write(tx)
print("released", flush=True)
sys.stdin.read()
"""

WRITER = r"""
import json, sys, time
from hermes_cli.kanban import Board, BoardBusy
from hermes_cli.kanban.store.connection import busy_timeout_ms, fair_busy_handler
b = Board.open(db_path=sys.argv[1])
calls = []
handler = fair_busy_handler(busy_timeout_ms())
b.db.conn.setbusyhandler(lambda n: calls.append(n) or handler(n))
print("ready", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
try:
    b.create_task("after the holder")
    outcome = "written"
except BoardBusy as exc:
    outcome = "busy: " + exc.message
print(json.dumps({"outcome": outcome, "busy_calls": len(calls), "seconds": time.monotonic() - t0}), flush=True)
"""


def _start(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def _line(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    return p.stdout.readline().strip()


def _finish(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=30)


def _board(tmp_path: Path) -> Path:
    db = tmp_path / "board.db"
    Board.open(db_path=str(db)).close()
    return db


def test_a_writer_behind_another_writer_waits_in_the_queue_not_polling(tmp_path: Path) -> None:
    """Before the queue, the waiting writer's busy handler ran every 0.2-2 ms for the whole wait (hundreds of
    calls over 0.5 s); queued in flock it is never called: SQLite's lock is free when the writer reaches it."""
    db = _board(tmp_path)
    holder = _start(HOLDER, str(db), "0.5")
    writer = _start(WRITER, str(db))
    try:
        assert _line(writer) == "ready"
        assert _line(holder) == "holding"
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        result = json.loads(_line(writer))
        assert _line(holder) == "released"
    finally:
        _finish(holder, writer)
    assert result["outcome"] == "written"
    assert result["busy_calls"] == 0, result
    with Board.open(db_path=str(db)) as b:
        assert [t.title for t in b.list_tasks(sort="age")] == ["held", "after the holder"]


def test_a_stopped_holder_cannot_hang_the_other_writers(tmp_path: Path) -> None:
    """A writer stopped inside its transaction holds the queue and SQLite's lock. The others wait the busy timeout
    in the queue, then go on to SQLite's lock without it, and end in BoardBusy as before the queue (a worker then
    spools its report): never a hang."""
    db = _board(tmp_path)
    holder = _start(HOLDER, str(db), "600")
    writer = _start(WRITER, str(db), env={"HERMES_KANBAN_BUSY_TIMEOUT_MS": "100"})
    try:
        assert _line(writer) == "ready"
        assert _line(holder) == "holding"
        os.kill(holder.pid, signal.SIGSTOP)
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        t0 = time.monotonic()
        result = json.loads(_line(writer))
        waited = time.monotonic() - t0
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        _finish(holder, writer)
    assert result["outcome"].startswith("busy: board database"), result
    assert result["busy_calls"] > 0  # it did reach SQLite's lock, past the stopped queue holder
    # 8 attempts of (100 ms in the queue + 100 ms on SQLite's lock + backoff): a few seconds, generously bounded
    assert waited < 60, waited
