#!/usr/bin/env python3
"""The floor under issue 12's targets: what a durable commit costs on this disk before any queue logic runs.

    python bench/floor.py                      # 2,000 tasks per loop, 3 alternating rounds, medians
    python bench/floor.py --tasks 5000 --rounds 5 --json

Eight loops of five kinds, one worker, synchronous=FULL, in one directory of the disk being measured, each after a
warm-up that takes the WAL past its first checkpoint (so that the file is overwritten, not grown: an fdatasync that
extends a file costs about twice one that overwrites, docs/performance.md):

1. `sqlite min`: the cheapest durable SQLite commit: a one-row UPDATE of an integer in its own autocommit
   transaction, WAL, synchronous=FULL, through APSW (our binding) and through the standard library's sqlite3 (the
   peers' binding). No SQLite commit that changes a row is cheaper from Python on this disk.
2. `store plain`: the store layer's own statements for one claim and one completion (store/tasks.py:
   claim_next_ready, add_event, complete_current_run, close_run), each in BEGIN IMMEDIATE ... COMMIT and synced by
   group commit (store/wal_sync.py), exactly the rows the product writes: the run row with its lease, the task's
   status, the events in the same transaction, the fencing condition. No domain layer, no write queue, no doorbell:
   the floor for the guarantees' write set with two commits per task.
3. `store plain, lean`: the same on a second board from which everything a cheaper schema could drop has been
   dropped, although reads depend on it: the `runs_open` and `events_task` indexes and AUTOINCREMENT on runs and
   events (4 of ~9 WAL pages per commit; docs/performance.md, "WAL frames per transaction"). An upper bound on what
   a schema change could buy, not a schema the product could ship.
4. `store next` (and `store next, lean`): the completion and the next claim in one transaction (`complete --next`'s
   write set).
5. `board plain` / `board next`: the same through the public API (Board.claim/complete/complete_next), so the
   domain layer's share is the difference to the store loops.

The fsync probe (a 4 KiB pwrite + fdatasync, overwriting, as bench/compare's) gives the ceiling; every loop prints
its commits/s and that rate as a fraction of the ceiling. bench/compare/run.py's `floor` scenario runs this script
in the same run as the peers, so its figures can be read against theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench" / "compare"):  # the package, and bench/compare's fsync probe
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

LEASE_S = 120.0


def probe_fsync(directory: Path, seconds: float = 1.0) -> float:
    """p50 seconds of bench/compare's fsync probe (a 4 KiB pwrite + fdatasync, overwriting) in `directory`."""
    from scenarios.fsync import sync_latencies  # bench/compare/scenarios: standard library only

    return statistics.median(sync_latencies(directory / "fsync-probe.bin", seconds))


def min_commit(directory: Path, binding: str, n: int) -> float:
    """Seconds per commit of a one-row UPDATE at FULL in WAL mode, after a warm-up past the first checkpoint."""
    path = directory / f"min-{binding}.db"
    if binding == "apsw":
        import apsw

        conn = apsw.Connection(str(path))
        run = conn.execute
    else:
        conn = sqlite3.connect(path, isolation_level=None)  # autocommit: one transaction per statement
        run = conn.execute
    try:
        run("PRAGMA journal_mode=WAL")
        run("PRAGMA synchronous=FULL")
        run("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        run("INSERT INTO t VALUES (1, 0)")
        for _ in range(1200):  # 1 frame per commit: past the 1,000-frame autocheckpoint, the WAL starts over
            run("UPDATE t SET v = v + 1 WHERE id = 1")
        t0 = time.perf_counter()
        for _ in range(n):
            run("UPDATE t SET v = v + 1 WHERE id = 1")
        return (time.perf_counter() - t0) / n
    finally:
        conn.close()


def _lean(conn) -> None:
    """Drop runs_open, events_task and AUTOINCREMENT from a freshly seeded board no Board has open: runs and events
    are made again (empty: a bench board needs none of its `created` events) with a plain INTEGER PRIMARY KEY."""
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "DROP INDEX runs_open; DROP INDEX events_task; DROP INDEX runs_task; DROP TABLE runs; DROP TABLE events; "
        "CREATE TABLE runs(id INTEGER PRIMARY KEY, task_id TEXT NOT NULL REFERENCES tasks(id), worker TEXT, "
        "started_at REAL NOT NULL, heartbeat_at REAL, lease_expires_at REAL NOT NULL, ended_at REAL, outcome TEXT, "
        "summary TEXT, host TEXT, pid INTEGER, pid_create_time REAL, exit_code INTEGER, result TEXT, metadata TEXT);"
        "CREATE INDEX runs_task ON runs(task_id, id);"
        "CREATE TABLE events(id INTEGER PRIMARY KEY, task_id TEXT, run_id INTEGER, kind TEXT NOT NULL, "
        "payload TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL)"
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA foreign_keys=ON")


class Floor:
    """One board at FULL with enough ready tasks for every loop; each loop returns seconds per task."""

    def __init__(self, directory: Path, tasks: int, *, lean: bool = False) -> None:
        os.environ["HERMES_HOME"] = str(directory / "home")
        os.environ["HERMES_KANBAN_SYNCHRONOUS"] = "normal"  # seeding only
        from hermes_cli.kanban import Board

        db_path = str(directory / ("kanban-lean.db" if lean else "kanban.db"))
        with Board.open(db_path=db_path) as seeder:
            seeder.db.write(lambda: [seeder.create_task(f"floor task {i}") for i in range(tasks)])
            if lean:
                _lean(seeder.db.conn)
        os.environ["HERMES_KANBAN_SYNCHRONOUS"] = "full"
        self.board = Board.open(db_path=db_path)
        self.db = self.board.db
        self.board.create_task("decides group commit")  # Database.write decides it at the first write
        self.host = os.uname().nodename

    def close(self) -> None:
        self.board.close()

    # -- the store layer's statements, without the domain layer --------------------------------------------------
    def _commit(self, body: Callable[[float], object]) -> object:
        from hermes_cli.kanban.store import wal_sync

        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = body(time.time())
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if self.db.group_commit:
            wal_sync.sync(conn)
        return out

    def _claim_rows(self, now: float) -> tuple[str, int]:
        from hermes_cli.kanban.core.models import iso
        from hermes_cli.kanban.store import tasks as sql

        expires = now + LEASE_S
        opened = sql.claim_next_ready(self.db, now, expires, "floor", self.host, None, None, unless_expired=True)
        assert opened is not None, "the floor board ran out of ready tasks"
        run_id, task_id, attempt = opened
        # the payload Board.claim writes (tests/test_bench_floor.py compares the rows of the two paths)
        sql.add_event(self.db, "claimed", now, task_id, run_id, attempt=attempt, worker="floor", pid=None,
                      lease_expires_at=iso(expires))
        return task_id, run_id

    def _complete_rows(self, now: float, task_id: str, run_id: int) -> None:
        from hermes_cli.kanban.store import tasks as sql

        done = sql.complete_current_run(self.db, task_id, run_id, now, "ok")
        assert done is not None, f"run {run_id} was not current"
        sql.close_run(self.db, run_id, "completed", now, "ok", None)
        sql.add_event(self.db, "completed", now, task_id, run_id, summary="ok", title=done[0].title, forced=None)

    def store_plain(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            task_id, run_id = self._commit(self._claim_rows)
            self._commit(lambda now, t=task_id, r=run_id: self._complete_rows(now, t, r))
        return (time.perf_counter() - t0) / n

    def store_next(self, n: int) -> float:
        held = self._commit(self._claim_rows)

        def complete_and_claim(now: float) -> tuple[str, int]:
            self._complete_rows(now, *held)
            return self._claim_rows(now)

        t0 = time.perf_counter()
        for _ in range(n):
            held = self._commit(complete_and_claim)
        elapsed = (time.perf_counter() - t0) / n
        self._commit(lambda now: self._complete_rows(now, *held))
        return elapsed

    # -- the public API ------------------------------------------------------------------------------------------
    def board_plain(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            claim = self.board.claim(worker="floor", ttl=LEASE_S)
            self.board.complete(claim.task_id, claim.run_id, summary="ok")
        return (time.perf_counter() - t0) / n

    def board_next(self, n: int) -> float:
        claim = self.board.claim(worker="floor", ttl=LEASE_S)
        t0 = time.perf_counter()
        for _ in range(n):
            _, claim = self.board.complete_next(claim.task_id, claim.run_id, summary="ok", worker="floor",
                                                ttl=LEASE_S)
        elapsed = (time.perf_counter() - t0) / n
        self.board.complete(claim.task_id, claim.run_id, summary="ok")
        return elapsed


#: the loops, in the order each round runs them; every loop not named here commits once per task (or per commit)
LOOPS = ("sqlite min (apsw)", "sqlite min (sqlite3)", "store plain", "store plain, lean", "board plain", "store next",
         "store next, lean", "board next")
COMMITS_PER_TASK = {"store plain": 2, "store plain, lean": 2, "board plain": 2}


def measure(tasks: int, rounds: int, directory: Path, progress: Callable[[str], None]) -> dict:
    p50 = probe_fsync(directory)
    warm = 300  # tasks: past the first autocheckpoint (~100 transactions of ~10 frames)
    floor = Floor(directory, (tasks + warm) * 4 * rounds + 10)
    lean = Floor(directory, (tasks + warm) * 2 * rounds + 10, lean=True)
    samples: dict[str, list[float]] = {name: [] for name in LOOPS}
    try:
        floor.store_plain(warm)
        lean.store_plain(warm)
        for r in range(rounds):  # alternating, so a noisy stretch of a shared machine hits every loop
            for name in LOOPS:
                progress(f"round {r + 1}/{rounds}: {name}")
                if name.startswith("sqlite min"):
                    binding = "apsw" if "apsw" in name else "sqlite3"
                    samples[name].append(min_commit(directory, binding, tasks))
                    (directory / f"min-{binding}.db").unlink()
                elif name.endswith(", lean"):
                    samples[name].append(getattr(lean, name.removesuffix(", lean").replace(" ", "_"))(tasks))
                else:
                    samples[name].append(getattr(floor, name.replace(" ", "_"))(tasks))
    finally:
        floor.close()
        lean.close()
    ceiling = 1 / p50
    loops = {}
    for name, values in samples.items():
        per = statistics.median(values)
        commits = COMMITS_PER_TASK.get(name, 1)
        loops[name] = {
            "tasks_per_s": None if name.startswith("sqlite min") else 1 / per,
            "commits_per_s": commits / per,
            "fraction_of_ceiling": commits / per / ceiling,
            "us_per_commit": 1e6 * per / commits,
            "rounds_us_per_commit": [round(1e6 * v / commits) for v in values],
        }
    return {"fsync_p50_ms": 1e3 * p50, "ceiling_per_s": ceiling, "tasks": tasks, "rounds": rounds, "loops": loops}


def render(res: dict) -> str:
    lines = [
        f"fsync probe p50 {res['fsync_p50_ms']:.3f} ms -> ceiling {res['ceiling_per_s']:.0f} commits/s; "
        f"{res['tasks']} tasks (or commits) per loop, median of {res['rounds']} round(s); one worker, FULL",
        f"{'loop':<22} {'tasks/s':>8} {'commits/s':>10} {'us/commit':>10} {'of ceiling':>11}",
    ]
    for name, r in res["loops"].items():
        rate = "-" if r["tasks_per_s"] is None else f"{r['tasks_per_s']:.0f}"
        lines.append(f"{name:<22} {rate:>8} {r['commits_per_s']:>10.0f} {r['us_per_commit']:>10.0f} "
                     f"{r['fraction_of_ceiling']:>11.3f}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=2000, help="tasks (or commits) per loop (default 2000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    ap.add_argument("--dir", help="where to measure (default: a temporary directory under the system temp dir)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if args.tasks < 1 or args.rounds < 1:
        ap.error("--tasks and --rounds must be at least 1")
    base = Path(args.dir) if args.dir else None
    work = Path(tempfile.mkdtemp(prefix="hk-floor-", dir=base))
    try:
        res = measure(args.tasks, args.rounds, work, lambda msg: print(msg, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=1) if args.json else render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
