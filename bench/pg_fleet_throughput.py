#!/usr/bin/env python3
"""Several dispatchers on one PostgreSQL board: end-to-end throughput and the transactions PostgreSQL aborted.

    python bench/pg_fleet_throughput.py [--dispatchers 1,3] [--tasks 200] [--json]

For each dispatcher count: a fresh database on a throwaway server (fsync off), `--tasks` tasks whose worker is
`true`, then that many `hermes kanban daemon` dispatchers (each its own HERMES_HOME, max_spawn 4) started at once;
timed from their start to the last task done. `aborted` is the database's `xact_rollback` delta (claims and
completions run SERIALIZABLE and are retried whole when PostgreSQL aborts one), with the server log's error kinds.
On one host the dispatchers share its cores: this shows contention, not what several hosts would do.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from hermes_cli.kanban import Board  # noqa: E402
from hermes_cli.kanban.store.pg.server import ThrowawayServer  # noqa: E402

HERMES = str(Path(sys.executable).with_name("hermes"))


def rollback_stats(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT xact_commit, xact_rollback FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def error_kinds(log: Path, start: int) -> dict[str, int]:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[start:]
    kinds: collections.Counter[str] = collections.Counter()
    for line in lines:
        if "ERROR:" in line:
            kinds[" ".join(line.split("ERROR:", 1)[1].split()[:8])] += 1
    return dict(kinds.most_common(5))


def measure(server: ThrowawayServer, home: Path, dispatchers: int, tasks: int) -> dict[str, object]:
    name = f"fleet{dispatchers}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = server.url_for(name)
    os.environ.update(HERMES_HOME=str(home / "creator"), HERMES_KANBAN_URL=url)
    with Board.open() as board:
        for i in range(tasks):
            board.create_task(f"t{i}", command="true")
    log_start = len(server.log.read_text(encoding="utf-8", errors="replace").splitlines())
    before = rollback_stats(url)
    procs = []
    started = time.monotonic()
    for n in range(dispatchers):
        board_dir = home / f"d{dispatchers}-{n}" / "kanban" / "boards" / "default"
        board_dir.mkdir(parents=True)
        (board_dir / "config.toml").write_text('[dispatch]\nmax_spawn = 4\nbackup_interval = "off"\n',
                                               encoding="utf-8")
        env = {**os.environ, "HERMES_HOME": str(board_dir.parents[2])}
        procs.append(subprocess.Popen([HERMES, "kanban", "daemon", "--quiet", "--json"], env=env,
                                      stdout=subprocess.PIPE, text=True))
    try:
        with Board.open() as board:
            deadline = time.monotonic() + 600
            while len(board.list_tasks(status="done", limit=tasks + 1)) < tasks:
                if time.monotonic() > deadline:
                    raise SystemExit("the tasks were not all done within 600 s")
                time.sleep(0.05)
        took = time.monotonic() - started
        after = rollback_stats(url)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.communicate(timeout=60)
    return {"dispatchers": dispatchers, "tasks": tasks, "seconds": round(took, 2),
            "tasks_per_s": round(tasks / took, 1), "aborted": after[1] - before[1],
            "errors": error_kinds(server.log, log_start)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dispatchers", default="1,3", help="dispatcher counts to measure (default 1,3)")
    ap.add_argument("--tasks", type=int, default=200, help="tasks per measurement (default 200)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    counts = [int(c) for c in args.dispatchers.split(",")]
    home = Path(tempfile.mkdtemp(prefix="hermes-bench-fleet-"))
    server = ThrowawayServer(fsync=False).start()
    env = {"cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}
    try:
        results = [measure(server, home, n, args.tasks) for n in counts]
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    env["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps({"benchmark": "pg_fleet_throughput", "environment": env, "results": results}))
        return 0
    print("dispatchers on one PostgreSQL board, end to end (tasks of `true`)")
    print("  " + ", ".join(f"{k} {v}" for k, v in env.items()))
    for r in results:
        print(f"  {r['dispatchers']} dispatcher(s): {r['tasks']} tasks in {r['seconds']} s = {r['tasks_per_s']} "
              f"tasks/s, {r['aborted']} transactions aborted {r['errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
