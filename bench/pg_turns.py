"""Writers of one PostgreSQL board under contention: claim -> complete and `complete_next` with W worker processes.

    python bench/pg_turns.py                    # W = 1, 4, 16; 600 tasks each
    python bench/pg_turns.py --workers 4 --tasks 1000

One throwaway PostgreSQL server (fsync on: PostgreSQL's defaults), a fresh database per cell, worker processes using
the library (`Board.open` with HERMES_KANBAN_URL). Prints tasks/s with the database's deadlock and rollback counts
(pg_stat_database) and the load average: the figures of docs/fleet.md's "Since then: writers take turns". A worker
that fails is counted and its last error line printed. Times include the workers' start-up (compare within a run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import psycopg

from hermes_cli.kanban import Board
from hermes_cli.kanban.store.pg.server import ThrowawayServer

WORKER = r'''
import sys, time
from hermes_cli.kanban import Board
nxt = sys.argv[1] == "next"; n = 0; t = time.time()
with Board.open() as b:
    c = b.claim(worker="w")
    while c is not None and time.time() - t < 30:
        if nxt:
            c = b.complete_next(c.task_id, c.run_id, summary="ok", worker="w", ttl=30)[1]
        else:
            b.complete(c.task_id, c.run_id, summary="ok")
            c = b.claim(worker="w")
        n += 1
print(n)
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,4,16")
    ap.add_argument("--tasks", type=int, default=600)
    args = ap.parse_args()
    os.environ["HERMES_HOME"] = tempfile.mkdtemp(prefix="hermes-pg-turns-")
    with ThrowawayServer(fsync=True) as server:
        for mode in ("plain", "next"):
            for w in (int(x) for x in args.workers.split(",")):
                db = f"turns_{mode}_{w}"
                with psycopg.connect(server.url, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {db}")
                os.environ["HERMES_KANBAN_URL"] = server.url_for(db)
                with Board.open() as board:
                    board.db.write(lambda b=board: [b.create_task(f"t{i}") for i in range(args.tasks)])
                started = time.time()
                procs = [subprocess.Popen([sys.executable, "-c", WORKER, mode], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True) for _ in range(w)]
                outs = [p.communicate() for p in procs]
                took = time.time() - started
                done = sum(int(o) for o, _ in outs if o.strip())
                failed = [e.strip().splitlines()[-1] for o, e in outs if not o.strip() and e.strip()]
                with psycopg.connect(server.url_for(db)) as conn:
                    row = conn.execute("SELECT deadlocks, xact_rollback FROM pg_stat_database "
                                       "WHERE datname = current_database()").fetchone()
                assert row is not None
                print(f"{mode:5} W={w:2}: {done} tasks in {took:.1f}s = {done / took:.0f}/s  deadlocks {row[0]}  "
                      f"rollbacks {row[1]}  failed workers {len(failed)} {failed[:1]}  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
