"""persist-queue — ``persistqueue.SQLiteAckQueue`` (ack queue; statuses inited/ready/unack/acked/ack_failed).

Every worker process opens its own instance on the same directory with ``multithreading=True`` (separate getter
and putter connections, ``check_same_thread=False``) and the default ``auto_resume=True``.

  put:      ``q.put(i)``                          INSERT (status inited)
  claim:    ``q.get(block=False, raw=True)``      SELECT first row with status < unack (getter connection), then a
                                                  separate UPDATE status=unack (putter connection). The two are not
                                                  one transaction and the UPDATE has no status check: the only guard
                                                  is a threading.Lock, i.e. nothing between processes.
  complete: ``q.ack(id=pqid)``                    UPDATE status=acked WHERE _id=? (cannot refuse)
  summary:  ``ready_count() / unack_count() / acked_count() / ack_failed_count()``

Recovery: there is no timeout. ``SQLiteAckQueue(auto_resume=True)`` (the default) calls ``resume_unack_tasks()`` when
a queue is *opened*, which flips **every** unack message — including ones held by other live consumers — back to
ready. So the recovery event is "a consumer (re)starts": in B2 that is the respawned worker; in the stall test it
is the second worker starting. No heartbeat, no fencing.

Durability: connections are opened with ``PRAGMA journal_mode=WAL`` and SQLite's default synchronous (FULL, 2, for
this Python's sqlite3); persist-queue has no synchronous setting, so NORMAL is n/a.
"""

from __future__ import annotations

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


def _dir(board_dir: Path) -> Path:
    return Path(board_dir) / "pq"


def _db(board_dir: Path) -> Path:
    return _dir(board_dir) / "data.db"


def _queue(board_dir: Path, auto_resume: bool = True):
    from persistqueue import SQLiteAckQueue

    return SQLiteAckQueue(str(_dir(board_dir)), multithreading=True, auto_resume=auto_resume)


class PersistQueueSession(Session):
    def __init__(self, board_dir: Path):
        self.q = _queue(board_dir)

    def claim_one(self):
        from persistqueue.exceptions import Empty

        try:
            item = self.q.get(block=False, raw=True)
        except Empty:
            return None
        return item["pqid"]

    def token_id(self, token):
        return str(token)

    def complete(self, token):
        return self.q.ack(id=token) is not None

    def recover(self):
        raise NotSupported("no time-based recovery: unacked messages are requeued only when a queue is opened")

    def summary(self):
        q = self.q
        return {
            "ready": q.ready_count(),
            "unack": q.unack_count(),
            "acked": q.acked_count(),
            "ack_failed": q.ack_failed_count(),
        }

    def add_task(self, i):
        return str(self.q.put(i))

    def remaining(self):
        # bookkeeping only: the public counters miss never-delivered rows (status "inited"), and q.qsize() is a
        # per-instance in-memory counter that other processes do not update
        row = self.q._getter.execute("SELECT COUNT(*) FROM `ack_queue_default` WHERE status < 5").fetchone()
        return row[0]

    def close(self):
        self.q.close()


class PersistQueueAdapter(Adapter):
    name = "persist-queue"
    dist = "persist-queue"

    def info(self):
        import sqlite3

        return {
            "version": dist_version(self.dist),
            "sqlite": sqlite3.sqlite_version,
            "sqlite_binding": "stdlib sqlite3",
            "durability": {
                "full": None,
                "normal": "n/a: no synchronous setting (SQLite default FULL for WAL here)",
            },
            "lease": None,
            "heartbeat": None,
            "fencing": None,
            "recovery": "on_open",
            "recovery_desc": "auto_resume=True: opening a queue resets ALL unack messages (also those of live "
            "consumers) to ready; triggered by each respawned worker",
            "summary": None,
            "summary_desc": "ready_count()+unack_count()+acked_count()+ack_failed_count() (4 queries)",
            "claim_desc": "get(): SELECT first status<unack, then separate UPDATE status=unack (no cross-process "
            "atomicity)",
            "fingerprint": dist_version(self.dist) + "-" + file_fingerprint(Path(__file__)),
        }

    def seed(self, board_dir, n):
        q = _queue(board_dir, auto_resume=False)
        q._putter.execute("PRAGMA synchronous=OFF")  # template only
        ids = [str(q.put(i)) for i in range(n)]
        q.close()
        stdlib_checkpoint(_db(board_dir))
        return ids

    def open(self, board_dir, durability, lease_s):
        if durability != "full":
            raise NotSupported(self.info()["durability"][durability])
        return PersistQueueSession(board_dir)

    def verify(self, board_dir):
        integrity = stdlib_integrity(_db(board_dir))
        # bookkeeping only (the public counters miss never-delivered "inited" rows)
        raw = stdlib_counts(_db(board_dir), "SELECT status, COUNT(*) FROM `ack_queue_default` GROUP BY status")
        if raw is None:
            return {"integrity": integrity, "done": None, "open": None, "inflight": None}
        counts = {int(k): v for k, v in raw.items()}
        # AckStatus: inited=0 ready=1 unack=2 acked=5 ack_failed=9
        return {
            "integrity": integrity,
            "done": counts.get(5, 0),
            "open": counts.get(0, 0) + counts.get(1, 0),
            "inflight": counts.get(2, 0),
            "failed": counts.get(9, 0),
        }


ADAPTER = PersistQueueAdapter()
