"""huey — ``SqliteHuey`` (``huey.storage.SqliteStorage``), used the way its consumer uses it.

  enqueue: ``huey.enqueue(noop.s(i))``            one INSERT into ``task`` (autocommit)
  claim:   ``huey.dequeue()``                     BEGIN EXCLUSIVE; SELECT first by priority, id; DELETE it
  complete:``huey.execute(task)``                 runs the no-op task and stores its result (kv table)

Delivery is at-most-once: dequeue *deletes* the message, so a consumer killed between dequeue and the result
loses the task; there is no lease, no heartbeat, no visibility timeout, nothing to recover (huey's consumer only
re-enqueues in-flight tasks on a *graceful* shutdown via ``notify_interrupted_tasks``/SIGINT, never after SIGKILL).

Durability: ``SqliteStorage(fsync=True)`` sets ``PRAGMA synchronous=2`` (FULL); ``fsync=False`` sets 0 (OFF);
there is no NORMAL setting.
"""

from __future__ import annotations

from pathlib import Path

from .base import Adapter, NotSupported, Session, dist_version, file_fingerprint, stdlib_integrity


def _db(board_dir: Path) -> Path:
    return Path(board_dir) / "huey.db"


def _huey(board_dir: Path, fsync: bool):
    from huey import SqliteHuey

    huey = SqliteHuey(name="bench", filename=str(_db(board_dir)), fsync=fsync, results=True)

    @huey.task(name="noop")
    def noop(i):
        return i

    return huey, noop


class HueySession(Session):
    def __init__(self, board_dir: Path):
        self.huey, self.noop = _huey(board_dir, fsync=True)

    def claim_one(self):
        return self.huey.dequeue()

    def token_id(self, token):
        return token.id

    def complete(self, token):
        self.huey.execute(token)
        return True

    def add_task(self, i):
        return self.huey.enqueue(self.noop.s(i)).id

    def remaining(self):
        # dequeued-but-unfinished tasks are invisible in huey: only the pending queue can be counted
        return self.huey.pending_count()

    def summary(self):
        raise NotSupported("no per-status view: dequeued tasks vanish from storage, only pending/result counts")

    def close(self):
        self.huey.storage.close()


class HueyAdapter(Adapter):
    name = "huey"
    dist = "huey"

    def info(self):
        import sqlite3

        return {
            "version": dist_version(self.dist),
            "sqlite": sqlite3.sqlite_version,
            "sqlite_binding": "stdlib sqlite3",
            "durability": {
                "full": None,
                "normal": "n/a: SqliteStorage(fsync=) maps to synchronous FULL or OFF only",
            },
            "lease": None,
            "heartbeat": None,
            "fencing": None,
            "recovery": "none",
            "recovery_desc": "none: dequeue() deletes the message (at-most-once); a SIGKILLed consumer's task is "
            "lost. Only a graceful consumer shutdown re-enqueues in-flight tasks",
            "summary": "n/a: in-flight tasks are not stored anywhere; only pending_count()/result_count()",
            "claim_desc": "dequeue(): BEGIN EXCLUSIVE, SELECT ORDER BY priority, id LIMIT 1, DELETE",
            "fingerprint": dist_version(self.dist) + "-" + file_fingerprint(Path(__file__)),
        }

    def seed(self, board_dir, n):
        Path(board_dir).mkdir(parents=True, exist_ok=True)
        huey, noop = _huey(board_dir, fsync=False)
        ids = [huey.enqueue(noop.s(i)).id for i in range(n)]
        huey.storage.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        huey.storage.close()
        return ids

    def open(self, board_dir, durability, lease_s):
        if durability != "full":
            raise NotSupported(self.info()["durability"][durability])
        return HueySession(board_dir)

    def verify(self, board_dir):
        integrity = stdlib_integrity(_db(board_dir))
        huey, _ = _huey(board_dir, fsync=False)
        try:
            return {
                "integrity": integrity,
                "done": huey.result_count(),
                "open": huey.pending_count(),
                "inflight": None,
            }
        finally:
            huey.storage.close()


ADAPTER = HueyAdapter()
