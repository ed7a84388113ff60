"""The adapter protocol every compared system implements.

An adapter runs inside its system's virtualenv. The driver (``worker.py``) calls it from real, separate worker
processes; nothing is shared between processes except the board directory on disk.

Life of a board in the benchmark::

    ids = adapter.seed(board_dir, n)             # once, into a template directory that is then copied per run
    s = adapter.open(board_dir, durability="full", lease_s=2.0)   # in every worker process
    tok = s.claim_one()                          # -> token or None when nothing is claimable now
    s.heartbeat(tok)                             # extend the lease (NotSupported if the system has no lease)
    s.use_complete_next()                        # optional: complete also claims the next (one transaction)
    accepted = s.complete(tok)                   # -> False when the system refused (fenced / stale)
    s.recover()                                  # the system's own time-based recovery tick (NotSupported if none)
    s.summary()                                  # a "board summary" (counts by status) through the system's API
    adapter.verify(board_dir)                    # after all workers exited: integrity_check + counts

Rules for adapters:

* Use the system's public API for everything that is measured (claim, complete, heartbeat, recover, summary,
  add_task). Raw SQL is allowed only in ``verify``/``remaining`` bookkeeping that the harness needs and the system
  has no API for; say so in a comment.
* Never invent a capability: raise :class:`NotSupported` with a one-line reason, which is reported as "n/a".
* ``complete`` returns whether the system accepted the completion. A system that cannot refuse returns True.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


class NotSupported(Exception):
    """The system has no such capability; the message is the reason printed as "n/a (...)"."""


class Session:
    """One process's handle on a board."""

    def claim_one(self) -> Any | None:
        raise NotImplementedError

    def token_id(self, token: Any) -> str:
        """The task's id as a string, the same string ``seed``/``add_task`` returned for it."""
        raise NotImplementedError

    def complete(self, token: Any) -> bool:
        raise NotImplementedError

    def heartbeat(self, token: Any) -> bool:
        raise NotSupported("no lease to extend")

    def use_complete_next(self) -> None:
        """From now on ``complete`` also claims the next task in the same transaction and the following
        ``claim_one`` hands that claim out (the ``next`` scenario); NotSupported if the system cannot."""
        raise NotSupported("no complete-and-claim in one transaction")

    def recover(self) -> int:
        raise NotSupported("no time-based recovery")

    def summary(self) -> dict:
        raise NotSupported("no board summary")

    def add_task(self, i: int) -> str:
        raise NotImplementedError

    def remaining(self) -> int:
        """Tasks not yet completed as the system sees them (ready + in flight where visible)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Adapter:
    #: name used on the command line
    name = ""
    #: the distribution whose version is reported
    dist = ""

    def info(self) -> dict:
        """Static facts about the system, reported verbatim in the results.

        Keys: ``version``, ``sqlite``, ``durability`` ({"full": None | "n/a reason", "normal": ...}),
        ``lease``, ``heartbeat``, ``fencing``, ``recovery`` ("tick" | "on_open" | "none"),
        ``recovery_desc``, ``summary`` (None or n/a reason), ``claim_desc``, ``fingerprint``.
        """
        raise NotImplementedError

    def seed(self, board_dir: Path, n: int) -> list[str]:
        """Create a board with ``n`` ready no-op tasks; fast settings allowed (it's a template)."""
        raise NotImplementedError

    def open(self, board_dir: Path, durability: str, lease_s: float) -> Session:
        raise NotImplementedError

    def verify(self, board_dir: Path) -> dict:
        """Return {"integrity": "ok" | message, "done": int, "open": int, "inflight": int | None}."""
        raise NotImplementedError


def dist_version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def file_fingerprint(*paths: Path) -> str:
    """Short hash of some files' bytes (used to key cached template boards)."""
    h = hashlib.sha1()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:12]


def stdlib_integrity(db: Path) -> str:
    """PRAGMA integrity_check through the stdlib sqlite3 this venv's peers use."""
    import sqlite3  # lazily: the hermes-kanban adapter (APSW) never loads stdlib sqlite3

    conn = sqlite3.connect(str(db), timeout=30)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return "ok" if rows == ["ok"] else "; ".join(rows)[:500]


def stdlib_counts(db: Path, sql: str) -> dict | None:
    """Bookkeeping counts (status -> n) read with stdlib sqlite3; None if the file cannot be read."""
    import sqlite3

    conn = sqlite3.connect(str(db), timeout=30)
    try:
        return {k: v for k, v in conn.execute(sql).fetchall()}
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()


def stdlib_checkpoint(db: Path) -> None:
    """Fold the WAL into the main file so a template is one self-contained file."""
    import sqlite3

    conn = sqlite3.connect(str(db), timeout=30)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
