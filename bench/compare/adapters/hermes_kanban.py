"""hermes kanban (this repository) — the public Python API ``hermes_cli.kanban``, installed with ``pip install .``.

  Board.open(db_path=...)                   APSW, WAL, synchronous from HERMES_KANBAN_SYNCHRONOUS (normal|full|extra),
                                            quick_check on open, busy timeout + jittered whole-transaction retry
  board.create_task(title)                  seed / writer
  board.claim(worker=, ttl=)                one IMMEDIATE transaction: reclaim expired leases, pick the next ready
                                            task by priority then age, open a run (run id = fencing token)
  board.heartbeat(task_id, run_id, ttl=)    extends the lease; StaleRun if the run is no longer current
  board.complete(task_id, run_id, summary=) fenced: StaleRun (-> "refused") if the run is no longer current
  board.complete_next(task_id, run_id, ...) the `next` scenario: the same fenced completion and the next claim in
                                            ONE transaction (one commit per task); claim_one hands that claim out
  board.reclaim_expired()                   the dispatcher's recovery tick (claim() also reclaims expired leases)
  board.counts()                            counts by status (the board summary)

Durability: HERMES_KANBAN_SYNCHRONOUS=full (default) or normal, set in the environment before Board.open.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Adapter, NotSupported, Session, dist_version

DB_NAME = "kanban.db"


def _db(board_dir: Path) -> Path:
    return Path(board_dir) / DB_NAME


def _env(board_dir: Path, durability: str) -> None:
    for key in [k for k in os.environ if k.startswith("HERMES_")]:
        del os.environ[key]
    os.environ["HERMES_HOME"] = str(Path(board_dir) / "home")
    os.environ["HERMES_KANBAN_SYNCHRONOUS"] = durability


def _open(board_dir: Path, durability: str):
    _env(board_dir, durability)
    from hermes_cli.kanban import Board

    return Board.open(db_path=str(_db(board_dir)))


class HermesKanbanSession(Session):
    def __init__(self, board_dir: Path, durability: str, lease_s: float):
        from hermes_cli.kanban import StaleRun

        self.StaleRun = StaleRun
        self.board = _open(board_dir, durability)
        self.lease_s = lease_s
        self.worker = f"bench-{os.getpid()}"
        self.next_mode = False
        #: the claim the last complete_next made, handed out by the next claim_one
        self.pending = None

    def use_complete_next(self):
        self.next_mode = True

    def claim_one(self):
        if self.pending is not None:
            claim, self.pending = self.pending, None
        else:
            claim = self.board.claim(worker=self.worker, ttl=self.lease_s)
        return None if claim is None else (claim.task_id, claim.run_id)

    def token_id(self, token):
        return token[0]

    def complete(self, token):
        try:
            if self.next_mode:
                _, self.pending = self.board.complete_next(
                    token[0], token[1], summary="ok", worker=self.worker, ttl=self.lease_s
                )
            else:
                self.board.complete(token[0], token[1], summary="ok")
        except self.StaleRun:
            return False
        return True

    def heartbeat(self, token):
        try:
            self.board.heartbeat(token[0], token[1], ttl=self.lease_s)
        except self.StaleRun:
            return False
        return True

    def recover(self):
        return len(self.board.reclaim_expired())

    def summary(self):
        return self.board.counts()

    def add_task(self, i):
        task, _ = self.board.create_task(f"task-{i}")
        return task.id

    def remaining(self):
        counts = self.board.counts()
        # blocked = gave up after max_retries: not coming back by itself, so not "remaining" (shows up as lost)
        return sum(counts.get(s, 0) for s in ("todo", "ready", "running"))

    def close(self):
        self.board.close()


def _package_fingerprint() -> str:
    """Hash of the installed hermes_cli/kanban sources: the product changes between runs, templates must follow."""
    import hashlib

    import hermes_cli.kanban as pkg

    h = hashlib.sha1()
    root = Path(pkg.__file__).parent
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:12]


class HermesKanbanAdapter(Adapter):
    name = "hermes-kanban"
    dist = "hermes-kanban"

    def info(self):
        import apsw

        return {
            "version": dist_version(self.dist),
            "sqlite": apsw.sqlite_lib_version(),
            "sqlite_binding": f"APSW {apsw.apsw_version()}",
            "durability": {"full": None, "normal": None},
            "lease": "lease_expires_at per claim (float seconds; default 120 s)",
            "heartbeat": "Board.heartbeat(task_id, run_id, ttl) extends the lease, fenced",
            "fencing": "run id is the fencing token: complete/heartbeat/block with a non-current run raise StaleRun "
            "and change nothing",
            "recovery": "tick",
            "recovery_desc": "lease expiry: Board.reclaim_expired() every 0.25 s here (dispatcher tick); every "
            "claim() also reclaims expired leases first",
            "summary": None,
            "summary_desc": "Board.counts(): one GROUP BY status query",
            "claim_desc": "Board.claim(): one IMMEDIATE txn: reclaim expired, pick next ready by priority/age, "
            "open run",
            "complete_next": "Board.complete_next(): the fenced completion and the next claim in one IMMEDIATE txn",
            "fingerprint": dist_version(self.dist) + "-" + _package_fingerprint(),
        }

    def seed(self, board_dir, n):
        Path(board_dir).mkdir(parents=True, exist_ok=True)
        # a template only: NORMAL (no fsync per commit) is the fastest setting the product accepts
        board = _open(board_dir, "normal")
        try:
            ids = [board.create_task(f"task-{i}")[0].id for i in range(n)]
            board.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            board.close()
        return ids

    def open(self, board_dir, durability, lease_s):
        if durability not in ("full", "normal"):
            raise NotSupported(f"unknown durability {durability}")
        return HermesKanbanSession(board_dir, durability, lease_s)

    def verify(self, board_dir):
        # bookkeeping through APSW directly (Board.open would fail closed on a damaged file; we want to report it)
        import apsw

        conn = apsw.Connection(str(_db(board_dir)), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            try:
                rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
                integrity = "ok" if rows == ["ok"] else "; ".join(rows)[:500]
            except apsw.Error as exc:
                return {"integrity": f"{type(exc).__name__}: {exc}", "done": None, "open": None, "inflight": None}
            counts = dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
            # B2 tells a lost task from one whose completing worker was killed before it logged the result
            done_ids = [r[0] for r in conn.execute("SELECT id FROM tasks WHERE status = 'done'")]
        finally:
            conn.close()
        return {
            "integrity": integrity,
            "done": counts.get("done", 0),
            "open": counts.get("ready", 0) + counts.get("todo", 0),
            "inflight": counts.get("running", 0),
            "blocked": counts.get("blocked", 0),
            "by_status": counts,
            "done_ids": done_ids,
        }


ADAPTER = HermesKanbanAdapter()
