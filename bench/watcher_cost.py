"""What the per-run watcher (hermes_cli/kanban/dispatch/watch.py) costs per worker, with real processes.

    start      start-up latency a watcher adds to a one-pass `dispatch`: spawn.start() of a worker directly (what the
               daemon does) and under a watcher (what a one-pass dispatch does), interleaved round by round on real
               claimed runs: wall seconds until the worker's pid is known (the pass waits for that), and the CPU
               seconds of the dispatcher process for that call
    life       one watcher over a worker's whole life (`sleep --life`, worker_ttl --ttl, so the lease is extended
               every ttl/3): the watcher's resident memory (RSS, and USS: the pages no other process shares) and
               open fds sampled mid-life, and its CPU seconds from start to exit (getrusage of the reaped watcher:
               its own time plus its reaped child's, the `sleep` worker, whose own share is printed separately from
               a bare `sleep` run the same way)

Usage: python bench/watcher_cost.py [--rounds 10] [--life 6] [--ttl 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil


def _board(home: str, ttl: str) -> Any:
    os.environ["HERMES_HOME"] = home
    from hermes_cli.kanban import Board

    b = Board.open()
    b.paths.config_file.write_text(f'[dispatch]\nworker_ttl = "{ttl}"\nbackup_interval = "off"\n', encoding="utf-8")
    return b


def _claimed(board: Any, command: str, ttl: float) -> tuple[Any, Any]:
    task, _ = board.create_task("bench", command=command, max_retries=0)
    claim = board.claim(task.id, worker="bench", ttl=ttl)
    assert claim is not None
    return task, claim


def _start(board: Any, command: str, *, watched: bool, ttl: float) -> tuple[Any, Any, float, float]:
    """Claim a task and start its worker; returns (claim, Started, wall seconds, this process's CPU seconds)."""
    from hermes_cli.kanban.dispatch import spawn

    task, claim = _claimed(board, command, ttl)
    watch = spawn.Watch(attempt=claim.attempt, max_runtime=None,
                        settings={"worker_ttl": ttl, "kill_grace": 5.0, "linger": 30.0}) if watched else None
    cpu0, t0 = time.process_time(), time.perf_counter()
    started = spawn.start(board.paths, command=command, task_id=task.id, run_id=claim.run_id, title=task.title,
                          attempt=claim.attempt, env_base=dict(os.environ), max_bytes=2 << 20, backups=2,
                          watch=watch)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if watched:
        board.set_run_process(claim.run_id, started.pid, started.create_time)
    return claim, started, wall, cpu


def _reap(pid: int) -> tuple[float, float]:
    """Wait for our child `pid`; its (CPU seconds, max RSS in MiB) from getrusage (itself + its reaped children)."""
    _, _, ru = os.wait4(pid, 0)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def _stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1]}


def bench_start(board: Any, rounds: int, ttl: float) -> dict[str, Any]:
    direct: dict[str, list[float]] = {"wall": [], "cpu": []}
    watched: dict[str, list[float]] = {"wall": [], "cpu": []}
    #: CPU seconds of each watcher from start to exit, for a worker (`true`) that exits at once
    watcher_cpu: list[float] = []
    for _ in range(rounds):
        for kind, into in (("direct", direct), ("watched", watched)):
            _, started, wall, cpu = _start(board, "true", watched=kind == "watched", ttl=ttl)
            into["wall"].append(wall)
            into["cpu"].append(cpu)
            cpu_child, _ = _reap(started.popen.pid)  # the worker, or its watcher (it records the run, then exits)
            if kind == "watched":
                watcher_cpu.append(cpu_child)
    return {"rounds": rounds, "direct": {k: _stats(v) for k, v in direct.items()},
            "watched": {k: _stats(v) for k, v in watched.items()},
            "added_wall_median_s": statistics.median(watched["wall"]) - statistics.median(direct["wall"]),
            "watcher_cpu_s": _stats(watcher_cpu)}


def bench_life(board: Any, life: float, ttl: float) -> dict[str, Any]:
    command = shlex.join(["sleep", f"{life:g}"])
    claim, started, _, _ = _start(board, command, watched=True, ttl=ttl)
    watcher = psutil.Process(started.popen.pid)
    time.sleep(life / 2)
    mem = watcher.memory_full_info()
    mid = watcher.cpu_times()
    fds = watcher.num_fds()
    cpu, maxrss = _reap(watcher.pid)
    run = board.detail(claim.task_id, events=0).runs[-1]
    # The worker's own share of getrusage: a bare `sleep` reaped the same way.
    bare = subprocess.Popen(["sleep", "0.2"])
    sleep_cpu, sleep_rss = _reap(bare.pid)
    return {"life_s": life, "worker_ttl_s": ttl, "rss_mib": mem.rss / 2**20, "uss_mib": mem.uss / 2**20,
            "fds": fds, "cpu_s": cpu, "cpu_mid_s": mid.user + mid.system, "maxrss_mib": maxrss,
            "sleep_worker_cpu_s": sleep_cpu,
            "sleep_worker_maxrss_mib": sleep_rss, "outcome": str(run.outcome), "exit_code": run.exit_code,
            "lease_extended_s": run.lease_expires_at - run.started_at - ttl}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--life", type=float, default=6.0)
    ap.add_argument("--ttl", type=float, default=3.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hermes-watcher-bench-") as home:
        board = _board(home, f"{args.ttl:g}s")
        start = bench_start(board, args.rounds, args.ttl)
        life = bench_life(board, args.life, args.ttl)
        board.close()
    env = {"python": platform.python_version(), "cpus": os.cpu_count(), "load_before": load_before,
           "load_after": os.getloadavg(), "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out = {"env": env, "start": start, "life": life}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"python {env['python']}, {env['cpus']} cpus, load {load_before[0]:.2f} -> {env['load_after'][0]:.2f}")
    s = start
    print(f"start-up, {s['rounds']} interleaved rounds (median [min-max]):")
    for kind in ("direct", "watched"):
        w, c = s[kind]["wall"], s[kind]["cpu"]
        print(f"  {kind:8} pid known after {w['median'] * 1000:7.1f} ms [{w['min'] * 1000:.1f}-{w['max'] * 1000:.1f}]"
              f"   dispatcher CPU {c['median'] * 1000:6.1f} ms")
    print(f"  added by the watcher: {s['added_wall_median_s'] * 1000:.1f} ms per worker (median wall); each watcher "
          f"of a worker that exits at once used {s['watcher_cpu_s']['median'] * 1000:.0f} ms CPU in all")
    lf = life
    print(f"one watcher over a {lf['life_s']:g}s worker (worker_ttl {lf['worker_ttl_s']:g}s):")
    print(f"  mid-life: RSS {lf['rss_mib']:.1f} MiB, USS {lf['uss_mib']:.1f} MiB, {lf['fds']} fds")
    print(f"  CPU: {lf['cpu_mid_s'] * 1000:.0f} ms by mid-life (start-up and imports), {lf['cpu_s'] * 1000:.0f} ms "
          f"over its whole life (incl. the sleep worker's {lf['sleep_worker_cpu_s'] * 1000:.0f} ms)")
    print(f"  max RSS {lf['maxrss_mib']:.1f} MiB; run {lf['outcome']} (exit {lf['exit_code']}), its lease "
          f"extended {lf['lease_extended_s']:.1f}s past the claim's ttl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
