#!/usr/bin/env python3
"""Throughput of the board and of the dispatcher, and the dispatcher's own footprint.

    python bench/throughput.py [--tasks 2000] [--workers 1,2,4,8] [--dispatch-tasks 10000] [--json]

1. claim -> complete with 1, 2, 4 and 8 worker processes: each worker is a separate process with its own
   connection, looping `claim()` -> `complete(run_id)` through the Python API until nothing is ready; all start
   together on a board of `--tasks` ready tasks. Figure: tasks/s over the wall time from "go" to the last exit.
2. the dispatcher end to end: `--dispatch-tasks` tasks whose worker is `true`, dispatched by a real
   `hermes kanban daemon` (max_spawn 8) that spawns a process per task. Figures: tasks/s, and, sampled
   every 0.2 s with psutil, the dispatcher's resident memory (RSS) and open file descriptors against the number of
   workers running at that moment. Targets (issue 5): RSS flat and < 80 MB over 10,000 tasks; a handful of fds per
   running worker at most.

Everything runs on throwaway boards in a temp HERMES_HOME, with the default synchronous=FULL.
"""

from __future__ import annotations

import argparse
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

import psutil  # noqa: E402

from hermes_cli.kanban import Board  # noqa: E402
from hermes_cli.kanban.dispatch import lease as lease_api  # noqa: E402
from hermes_cli.kanban.store.connection import filesystem_type  # noqa: E402


def environment(where: Path) -> dict[str, object]:
    """What the figures depend on: printed with them (the machine may be shared)."""
    import platform

    import apsw

    return {"python": platform.python_version(), "sqlite": apsw.sqlite_lib_version(), "cpus": os.cpu_count(),
            "filesystem": filesystem_type(where), "loadavg_1m": round(os.getloadavg()[0], 2)}


def worker_main(slug: str, go: Path) -> int:
    with Board.open(slug) as board:
        while not go.exists():
            time.sleep(0.001)
        done = 0
        while True:
            claim = board.claim(worker=f"bench-{os.getpid()}", ttl=60)
            if claim is None:
                break
            board.complete(claim.task_id, claim.run_id, summary="bench")
            done += 1
    print(done)
    return 0


def create_tasks(board: Board, n: int, command: str | None, batch: int = 500) -> None:
    for start in range(0, n, batch):
        def tx(start: int = start) -> None:
            for i in range(start, min(n, start + batch)):
                board.create_task(f"bench {i}", command=command)
        board.db.write(tx)


def pull_throughput(home: Path, tasks: int, workers: int) -> dict[str, object]:
    slug = f"pull-{workers}"
    with Board.open(slug, create=True) as board:
        create_tasks(board, tasks, None)
    go = home / f"go-{workers}"
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", slug, str(go)], stdout=subprocess.PIPE, text=True)
             for _ in range(workers)]
    time.sleep(1.0)  # let every worker import and open the board before the clock starts
    t0 = time.perf_counter()
    go.touch()
    counts = [int(p.communicate(timeout=600)[0].strip() or 0) for p in procs]
    wall = time.perf_counter() - t0
    with Board.open(slug) as board:
        done = board.counts()["done"]
    return {"workers": workers, "tasks": tasks, "completed": sum(counts), "done_on_board": done,
            "seconds": round(wall, 3), "tasks_per_s": round(tasks / wall, 1),
            "per_worker": counts}


def dispatcher_run(home: Path, tasks: int) -> dict[str, object]:
    slug = "dispatch"
    env = {k: v for k, v in os.environ.items() if k not in ("HERMES_KANBAN_DB", "HERMES_KANBAN_BOARD")}
    with Board.open(slug, create=True) as board:
        board.paths.config_file.write_text('[dispatch]\nmax_spawn = 8\nbackup_interval = "off"\n', encoding="utf-8")
        d = subprocess.Popen([sys.executable, "-m", "hermes_cli.main", "kanban", "daemon", "--board", slug,
                              "--quiet", "--json"], env=env, stdout=subprocess.PIPE, text=True)
        proc = psutil.Process(d.pid)
        deadline = time.time() + 30
        while lease_api.read_lease(board) is None:
            if time.time() > deadline:
                raise SystemExit("the dispatcher did not start")
            time.sleep(0.01)
        time.sleep(0.3)
        idle_rss, idle_fds = proc.memory_info().rss, proc.num_fds()
        samples: list[tuple[float, int, int, int, int]] = []  # (t, done, rss, fds, running workers)
        t0 = time.perf_counter()
        create_tasks(board, tasks, "true")
        while True:
            done = board.counts()["done"]
            running = len(proc.children())
            samples.append((time.perf_counter() - t0, done, proc.memory_info().rss, proc.num_fds(), running))
            if done >= tasks:
                break
            if time.perf_counter() - t0 > 1800 or d.poll() is not None:
                raise SystemExit(f"the dispatcher stopped early or took too long: {done}/{tasks} done")
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        time.sleep(0.5)  # let the last exits be recorded, then count again: a leak shows as fds above idle
        end_fds = proc.num_fds()
        d.send_signal(signal.SIGTERM)
        out, _ = d.communicate(timeout=60)
        summary = json.loads(out.strip().splitlines()[-1])
    mb = 1024 * 1024
    rss = [s[2] for s in samples]
    tenth = next((s[2] for s in samples if s[1] >= tasks // 10), rss[0])
    busiest = max(samples, key=lambda s: (s[4], s[3]))
    return {
        "tasks": tasks, "seconds": round(wall, 2), "tasks_per_s": round(tasks / wall, 1),
        "spawned": summary["spawned"], "completed": summary["completed"],
        "rss_idle_mb": round(idle_rss / mb, 1), "rss_at_10pct_mb": round(tenth / mb, 1),
        "rss_max_mb": round(max(rss) / mb, 1), "rss_end_mb": round(rss[-1] / mb, 1),
        "fds_idle": idle_fds, "fds_max": max(s[3] for s in samples), "fds_end": end_fds,
        "max_extra_fds": max(s[3] for s in samples) - idle_fds,
        "busiest_sample": {"running": busiest[4], "extra_fds": busiest[3] - idle_fds},
    }


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        return worker_main(sys.argv[2], Path(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=2000, help="tasks per pull-worker run (default 2000)")
    ap.add_argument("--workers", default="1,2,4,8", help="worker process counts (default 1,2,4,8)")
    ap.add_argument("--dispatch-tasks", type=int, default=10_000, help="tasks for the dispatcher run (0: skip)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="hermes-bench-throughput-"))
    os.environ["HERMES_HOME"] = str(home)
    env = environment(home)
    try:
        pull = [pull_throughput(home, args.tasks, int(n)) for n in args.workers.split(",")]
        disp = dispatcher_run(home, args.dispatch_tasks) if args.dispatch_tasks else None
    finally:
        shutil.rmtree(home, ignore_errors=True)
    env["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    result = {"benchmark": "throughput", "environment": env, "pull": pull, "dispatcher": disp}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"claim -> complete throughput, {args.tasks} tasks, worker processes looping claim/complete "
          "(synchronous=FULL)")
    print("  " + ", ".join(f"{k} {v}" for k, v in env.items()))
    for r in pull:
        print(f"  {r['workers']} worker(s): {r['tasks_per_s']:8.1f} tasks/s  ({r['seconds']}s, "
              f"{r['done_on_board']} done)")
    if disp is not None:
        flat = disp["rss_end_mb"] - disp["rss_at_10pct_mb"]  # type: ignore[operator]
        print(f"dispatcher, {disp['tasks']} tasks each run by a real process (`true`), max_spawn 8:")
        print(f"  {disp['tasks_per_s']} tasks/s ({disp['seconds']}s); spawned {disp['spawned']}, "
              f"completed {disp['completed']}")
        print(f"  RSS: idle {disp['rss_idle_mb']} MB, after 10% {disp['rss_at_10pct_mb']} MB, max "
              f"{disp['rss_max_mb']} MB, end {disp['rss_end_mb']} MB (growth after 10%: {flat:+.1f} MB; "
              "target < 80 MB, flat)")
        busiest = disp["busiest_sample"]
        print(f"  fds: idle {disp['fds_idle']}, max {disp['fds_max']} (+{disp['max_extra_fds']}), after the run "
              f"{disp['fds_end']}; busiest sample: {busiest['running']} workers running, "
              f"+{busiest['extra_fds']} fds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
