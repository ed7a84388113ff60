"""Store throughput and CLI start-up: how fast one process creates, claims, heartbeats and completes tasks, with
`synchronous` FULL (the default) and NORMAL, and the wall time of one `hermes kanban create` next to a bare
`python -c pass`.

    python bench/store_bench.py                  # 2000 tasks per mode, 21 CLI calls
    python bench/store_bench.py -n 500 --cli-runs 11 --json

Every operation is its own transaction (BEGIN IMMEDIATE ... COMMIT, event row included), as the CLI and workers
do it. Claims take the next ready task (the dispatcher's query). Figures depend on the disk's fsync latency and on
what else the machine is doing: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def store_rates(n: int, synchronous: str, workdir: Path) -> dict[str, float]:
    """ops/s for create, claim, heartbeat, complete on a fresh board in `workdir`."""
    os.environ["HERMES_HOME"] = str(workdir)
    os.environ["HERMES_KANBAN_SYNCHRONOUS"] = synchronous
    from hermes_cli.kanban import Board

    out: dict[str, float] = {}
    with Board.open() as b:
        t0 = time.perf_counter()
        for i in range(n):
            b.create_task(f"bench task {i}", priority=i % 7)
        out["create"] = _rate(n, time.perf_counter() - t0)

        claims = []
        t0 = time.perf_counter()
        for _ in range(n):
            c = b.claim(worker="bench", ttl="10m")
            assert c is not None
            claims.append(c)
        out["claim"] = _rate(n, time.perf_counter() - t0)

        t0 = time.perf_counter()
        for c in claims:
            b.heartbeat(c.task_id, c.run_id, ttl="10m")
        out["heartbeat"] = _rate(n, time.perf_counter() - t0)

        t0 = time.perf_counter()
        for c in claims:
            b.complete(c.task_id, c.run_id, summary="bench")
        out["complete"] = _rate(n, time.perf_counter() - t0)
        assert b.counts()["done"] == n
        # FULL is group commit: SQLite at NORMAL plus our own WAL sync after each COMMIT (store/wal_sync.py)
        wanted = (1, True) if synchronous == "full" else (1, False)
        assert (b.db.value("PRAGMA synchronous"), bool(b.db.group_commit)) == wanted
    return out


def median_wall(argv: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cli_times(runs: int, workdir: Path) -> dict[str, float]:
    hermes = str(Path(sys.executable).with_name("hermes"))
    env = {**os.environ, "HERMES_HOME": str(workdir)}
    env.pop("HERMES_KANBAN_SYNCHRONOUS", None)
    subprocess.run([hermes, "kanban", "init"], check=True, stdout=subprocess.DEVNULL, env=env)
    return {
        "python_c_pass_s": median_wall([sys.executable, "-c", "pass"], runs, env),
        "hermes_kanban_create_s": median_wall([hermes, "kanban", "create", "bench"], runs, env),
        "hermes_kanban_help_s": median_wall([hermes, "kanban", "--help"], runs, env),
    }


def environment(workdir: Path) -> dict[str, object]:
    import apsw

    from hermes_cli.kanban.store.connection import filesystem_type

    return {
        "python": platform.python_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "cpus": os.cpu_count(),
        "filesystem": filesystem_type(workdir),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--tasks", type=int, default=2000, help="tasks per mode (default 2000)")
    ap.add_argument("--cli-runs", type=int, default=21, help="CLI calls timed for each median (default 21)")
    ap.add_argument("--dir", default=None, help="where to create the scratch boards (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hermes-bench-", dir=args.dir) as tmp:
        base = Path(tmp)
        result: dict[str, object] = {"tasks": args.tasks, "environment": environment(base)}
        for mode in ("full", "normal"):
            result[mode] = store_rates(args.tasks, mode, base / mode)
        result["cli"] = cli_times(args.cli_runs, base / "cli")
        result["environment"]["loadavg_1m_after"] = round(os.getloadavg()[0], 2)  # type: ignore[index]

    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    env = result["environment"]
    print(f"hermes kanban store bench: {args.tasks} tasks per mode, one transaction per operation")
    print("  " + ", ".join(f"{k} {v}" for k, v in env.items()))  # type: ignore[union-attr]
    print(f"  {'ops/s':<12}{'create':>10}{'claim':>10}{'heartbeat':>11}{'complete':>10}")
    for mode in ("full", "normal"):
        r = result[mode]
        print(f"  {mode.upper():<12}" + "".join(f"{r[k]:>{w}.0f}" for k, w in  # type: ignore[index]
                                                 (("create", 10), ("claim", 10), ("heartbeat", 11), ("complete", 10))))
    c = result["cli"]
    print(f"  median wall of {args.cli_runs} runs:")
    print(f"    python -c pass             {c['python_c_pass_s'] * 1000:7.1f} ms")  # type: ignore[index]
    print(f"    hermes kanban create x     {c['hermes_kanban_create_s'] * 1000:7.1f} ms")  # type: ignore[index]
    print(f"    hermes kanban --help       {c['hermes_kanban_help_s'] * 1000:7.1f} ms")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())
