"""hermes-agent 0.19.0 — ``hermes_cli.kanban_db`` (the peer kanban module), driven in-process.

What is called (all public functions of ``hermes_cli.kanban_db``):
  connect(db_path)                         open + first-open integrity probe/schema; forces WAL, synchronous=FULL,
                                           wal_autocheckpoint=100, busy_timeout=120 s on every connection
  create_task(conn, title=...)             seed / writer
  claim_task(conn, task_id, ttl_seconds)   CAS ready->running, opens a run (run id = tasks.current_run_id)
  heartbeat_claim(conn, task_id, ttl_seconds)   extends claim_expires (keyed by claim_lock "<host>:<pid>")
  complete_task(conn, task_id, summary, expected_run_id)   the worker path (kanban_complete tool passes the
                                           run id from HERMES_KANBAN_RUN_ID) -> False if the run is not current
  release_stale_claims(conn)               the dispatcher tick's TTL reclaim phase
  board_stats(conn)                        the board summary behind `hermes kanban stats`

Picking the next task: hermes-agent has no "claim next" call — its dispatcher runs
``SELECT id FROM tasks WHERE status='ready' AND claim_lock IS NULL ORDER BY priority DESC, created_at ASC`` and then
``claim_task(id)``. Here every worker runs that query (LIMIT 16), picks one of the rows at random (so that N workers
do not all race for the same row) and retries on a lost CAS. Lost CASes are counted as ``conflicts``.

Lifecycle hook: every claim/complete calls ``_fire_kanban_lifecycle_hook``, which imports ``hermes_cli.plugins``
lazily. In the 0.19.0 wheel that import succeeds and the call is a no-op without plugins, but it would measure the
plugin manager, not the board; it is replaced by a no-op stub via ``sys.modules`` injection before the first call.
The module itself imports cleanly (``toolsets`` ships in the wheel). Every process gets HERMES_HOME /
HERMES_KANBAN_HOME / HERMES_KANBAN_DB pointing inside the board directory, so nothing touches ~/.hermes.
"""

from __future__ import annotations

import os
import random
import sys
import types
from pathlib import Path

from .base import (
    Adapter,
    NotSupported,
    Session,
    dist_version,
    file_fingerprint,
    stdlib_checkpoint,
    stdlib_counts,
    stdlib_integrity,
)


def _kb(board_dir: Path):
    """Point hermes-agent at the board dir, stub the lifecycle hook, import kanban_db."""
    home = Path(board_dir) / "home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["HERMES_HOME"] = str(home)
    os.environ["HERMES_KANBAN_HOME"] = str(home)
    os.environ["HERMES_KANBAN_DB"] = str(home / "kanban.db")
    os.environ.pop("HERMES_KANBAN_BOARD", None)
    if "hermes_cli.plugins" not in sys.modules or not getattr(sys.modules["hermes_cli.plugins"], "_bench_stub", 0):
        stub = types.ModuleType("hermes_cli.plugins")
        stub._bench_stub = 1
        stub.invoke_hook = lambda *a, **k: []
        sys.modules["hermes_cli.plugins"] = stub
    from hermes_cli import kanban_db

    if os.environ.get("BENCH_HERMES_AGENT_NO_LENGTH_PROBE") == "1":
        # DIAGNOSTIC ONLY (never set by run.py): disable the post-commit file-length probe, which open()s and
        # close()s kanban.db from a process holding a connection and so drops that process's POSIX locks.
        kanban_db._check_file_length_invariant = lambda conn: None
    return kanban_db


def _db(board_dir: Path) -> Path:
    return Path(board_dir) / "home" / "kanban.db"


class HermesAgentSession(Session):
    def __init__(self, board_dir: Path, lease_s: float):
        self.kb = _kb(board_dir)
        # claim TTLs are whole seconds in hermes-agent (claim_expires is an int epoch)
        self.ttl = max(1, int(round(lease_s)))
        self.conn = self.kb.connect(_db(board_dir))
        self.conflicts = 0

    def claim_one(self):
        kb = self.kb
        while True:
            rows = self.conn.execute(
                "SELECT id FROM tasks WHERE status = 'ready' AND claim_lock IS NULL "
                "ORDER BY priority DESC, created_at ASC LIMIT 16"
            ).fetchall()
            if not rows:
                return None
            task_id = random.choice(rows)[0]
            task = kb.claim_task(self.conn, task_id, ttl_seconds=self.ttl)
            if task is not None:
                return (task.id, task.current_run_id)
            self.conflicts += 1

    def token_id(self, token):
        return token[0]

    def complete(self, token):
        return bool(self.kb.complete_task(self.conn, token[0], summary="ok", expected_run_id=token[1]))

    def heartbeat(self, token):
        return bool(self.kb.heartbeat_claim(self.conn, token[0], ttl_seconds=self.ttl))

    def recover(self):
        return int(self.kb.release_stale_claims(self.conn))

    def summary(self):
        return self.kb.board_stats(self.conn)["by_status"]

    def add_task(self, i):
        return self.kb.create_task(self.conn, title=f"task-{i}")

    def remaining(self):
        by_status = self.kb.board_stats(self.conn)["by_status"]
        return sum(n for status, n in by_status.items() if status not in ("done", "archived"))

    def close(self):
        self.conn.close()


class HermesAgentAdapter(Adapter):
    name = "hermes-agent"
    dist = "hermes-agent"

    def info(self):
        import sqlite3

        return {
            "version": dist_version(self.dist),
            "sqlite": sqlite3.sqlite_version,
            "sqlite_binding": "stdlib sqlite3",
            "durability": {
                "full": None,
                "normal": "n/a: connect() hard-codes PRAGMA synchronous=FULL on every connection, no setting",
            },
            "lease": "claim TTL (claim_expires, whole seconds; default 900 s)",
            "heartbeat": "heartbeat_claim() extends claim_expires",
            "fencing": "complete_task(expected_run_id=) refuses a run that is no longer current "
            "(without it, any caller can complete a running/ready/blocked task)",
            "recovery": "tick",
            "recovery_desc": "release_stale_claims() (dispatcher tick reclaim phase) resets running tasks whose "
            "claim expired to ready; run every 0.25 s here (default tick 60 s). detect_crashed_workers() needs a "
            "dispatcher-recorded worker_pid and is not used by self-claiming workers",
            "summary": None,
            "summary_desc": "board_stats(): counts by status + by assignee + oldest ready age",
            "claim_desc": "SELECT ready ORDER BY priority, created_at LIMIT 16 -> random pick -> claim_task CAS",
            "fingerprint": dist_version(self.dist) + "-" + file_fingerprint(Path(__file__)),
        }

    def seed(self, board_dir, n):
        kb = _kb(board_dir)
        conn = kb.connect(_db(board_dir))
        conn.execute("PRAGMA synchronous=OFF")  # template only; workers reconnect with the system's own settings
        ids = [kb.create_task(conn, title=f"task-{i}") for i in range(n)]
        conn.close()
        stdlib_checkpoint(_db(board_dir))
        return ids

    def open(self, board_dir, durability, lease_s):
        if durability != "full":
            raise NotSupported(self.info()["durability"][durability])
        return HermesAgentSession(board_dir, lease_s)

    def verify(self, board_dir):
        # Bookkeeping with stdlib sqlite3 rather than kb.connect(): connect() refuses (and backs up) a board that
        # fails its integrity probe, and we want to report the damage, not trip over it.
        integrity = stdlib_integrity(_db(board_dir))
        by_status = stdlib_counts(_db(board_dir), "SELECT status, COUNT(*) FROM tasks GROUP BY status")
        if by_status is None:
            return {"integrity": integrity, "done": None, "open": None, "inflight": None}
        return {
            "integrity": integrity,
            "done": by_status.get("done", 0),
            "open": by_status.get("ready", 0) + by_status.get("todo", 0),
            "inflight": by_status.get("running", 0),
            "by_status": by_status,
        }


ADAPTER = HermesAgentAdapter()
