"""litequeue — ``LiteQueue`` (one table; messages READY -> LOCKED -> DONE).

  put:      ``q.put(str(i))``                     INSERT (autocommit)
  claim:    ``q.pop()``                           BEGIN IMMEDIATE; UPDATE ... WHERE rowid = (first READY by
                                                  message_id) SET LOCKED, lock_time RETURNING *
  complete: ``q.done(message_id)``                UPDATE status=DONE WHERE message_id=?  (no status/owner check)
  recover:  ``q.list_locked(threshold_s)`` + ``q.retry(message_id)``  — the documented way to requeue messages
            locked for longer than a threshold; run every 0.25 s with threshold = lease (2 s) here.

No heartbeat (lock_time cannot be extended), no owner/fencing: ``done()`` marks any message DONE, so a worker
that was paused past the threshold still "completes" after another worker took the message over, and
``retry()`` can even flip a just-completed message back to READY (list_locked and retry are two statements).

Durability: LiteQueue's constructor always runs ``PRAGMA synchronous = NORMAL``. FULL is set by the adapter with
``q.conn.execute("PRAGMA synchronous=FULL")`` on the queue's public ``conn`` attribute.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    Adapter,
    Session,
    dist_version,
    file_fingerprint,
    stdlib_checkpoint,
    stdlib_counts,
    stdlib_integrity,
)

TABLE = "bench"


def _db(board_dir: Path) -> Path:
    return Path(board_dir) / "litequeue.db"


def _queue(board_dir: Path):
    from litequeue import LiteQueue

    return LiteQueue(str(_db(board_dir)), queue_name=TABLE)


class LiteQueueSession(Session):
    def __init__(self, board_dir: Path, durability: str, lease_s: float):
        self.q = _queue(board_dir)
        if durability == "full":
            self.q.conn.execute("PRAGMA synchronous=FULL")
        self.lease_s = lease_s

    def claim_one(self):
        msg = self.q.pop()
        return None if msg is None else msg.message_id

    def token_id(self, token):
        return token

    def complete(self, token):
        self.q.done(token)
        return True  # done() cannot refuse

    def recover(self):
        n = 0
        for msg in list(self.q.list_locked(self.lease_s)):
            self.q.retry(msg.message_id)
            n += 1
        return n

    def add_task(self, i):
        return self.q.put(str(i)).message_id

    def remaining(self):
        return self.q.qsize()  # READY + LOCKED

    def close(self):
        self.q.close()


class LiteQueueAdapter(Adapter):
    name = "litequeue"
    dist = "litequeue"

    def info(self):
        import sqlite3

        return {
            "version": dist_version(self.dist),
            "sqlite": sqlite3.sqlite_version,
            "sqlite_binding": "stdlib sqlite3",
            "durability": {"full": None, "normal": None},
            "durability_note": "NORMAL is litequeue's hard-coded default; FULL set via q.conn PRAGMA by the adapter",
            "lease": "lock_time + caller-chosen threshold in list_locked()",
            "heartbeat": None,
            "fencing": None,
            "recovery": "tick",
            "recovery_desc": "list_locked(threshold_s) + retry(message_id) every 0.25 s, threshold = lease (2 s)",
            "summary": "n/a: API exposes only qsize()/empty()/list_locked()/list_failed(), no counts by status",
            "claim_desc": "pop(): BEGIN IMMEDIATE; UPDATE first READY by message_id RETURNING",
            "fingerprint": dist_version(self.dist) + "-" + file_fingerprint(Path(__file__)),
        }

    def seed(self, board_dir, n):
        Path(board_dir).mkdir(parents=True, exist_ok=True)
        q = _queue(board_dir)
        q.conn.execute("PRAGMA synchronous=OFF")
        ids = [q.put(str(i)).message_id for i in range(n)]
        q.close()
        stdlib_checkpoint(_db(board_dir))
        return ids

    def open(self, board_dir, durability, lease_s):
        return LiteQueueSession(board_dir, durability, lease_s)

    def verify(self, board_dir):
        integrity = stdlib_integrity(_db(board_dir))
        # bookkeeping only: litequeue has no count-by-status API
        counts = stdlib_counts(_db(board_dir), f"SELECT status, COUNT(*) FROM [{TABLE}] GROUP BY status")
        if counts is None:
            return {"integrity": integrity, "done": None, "open": None, "inflight": None}
        # MessageStatus: READY=0 LOCKED=1 DONE=2 FAILED=3
        return {
            "integrity": integrity,
            "done": counts.get(2, 0),
            "open": counts.get(0, 0),
            "inflight": counts.get(1, 0),
            "failed": counts.get(3, 0),
        }


ADAPTER = LiteQueueAdapter()
