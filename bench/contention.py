"""Write contention on one board: burn-down rate with 1..N worker processes, and how long a third writer waits.

    python bench/contention.py                          # workers 1,2,4,8; 1.5 s windows; 3 rounds
    python bench/contention.py --next                   # workers use complete_next (one commit per task)
    python bench/contention.py --workers 1,8 --rounds 5 --writer-only

1. burn: W worker processes loop claim -> complete (or complete_next) on a copy of one seeded board for a fixed
   window after a common start signal (process start-up and imports are not measured); tasks/s = completions in
   the window / window. Rounds are interleaved (round -> worker count) so a noisy stretch of a shared machine hits
   every worker count, and the median round is reported with the ratio to 1 worker.
2. third writer: 2 workers burn while a third process creates one task every 50 ms; figures are that writer's
   create latency p50 / p99 / max. This is the case the fair busy handler exists for (docs/performance.md: with
   SQLite's own backing-off busy_timeout the writer waited 0.8 s at the median, 2.1 s at worst).

Same as bench/compare's B1, with the product only and no virtualenvs, so it runs in seconds; synchronous=FULL (the
default) unless --sync says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _env(db: Path, sync: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
    env["HERMES_HOME"] = str(db.parent / "home")
    env["HERMES_KANBAN_SYNCHRONOUS"] = sync
    return env


def seed(db: Path, n: int) -> None:
    os.environ.update(_env(db, "normal"))
    from hermes_cli.kanban import Board

    with Board.open(db_path=str(db)) as b:
        def tx() -> None:
            for i in range(n):
                b.create_task(f"contention task {i}")

        b.db.write(tx)
        b.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def role_burn(db: str, out: str, use_next: bool) -> None:
    from hermes_cli.kanban import Board

    with Board.open(db_path=db) as b:
        print("ready", flush=True)
        t_go, t_end = (float(x) for x in sys.stdin.readline().split())
        while time.time() < t_go:
            time.sleep(0.0005)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        done = 0
        claim = b.claim(worker=f"w{os.getpid()}", ttl=60)
        while claim is not None and time.time() < t_end:
            if use_next:
                claim = b.complete_next(claim.task_id, claim.run_id, summary="ok", worker=f"w{os.getpid()}", ttl=60)[1]
            else:
                b.complete(claim.task_id, claim.run_id, summary="ok")
                claim = b.claim(worker=f"w{os.getpid()}", ttl=60)
            done += 1
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        Path(out).write_text(json.dumps({
            "done": done, "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "vcsw": r1.ru_nvcsw - r0.ru_nvcsw, "ivcsw": r1.ru_nivcsw - r0.ru_nivcsw,
        }))


def role_writer(db: str, out: str, interval: float) -> None:
    from hermes_cli.kanban import Board

    with Board.open(db_path=db) as b:
        print("ready", flush=True)
        t_go, t_end = (float(x) for x in sys.stdin.readline().split())
        while time.time() < t_go:
            time.sleep(0.0005)
        lat = []
        nxt = time.time()
        while time.time() < t_end:
            t0 = time.perf_counter()
            b.create_task("from the third writer")
            lat.append(time.perf_counter() - t0)
            nxt += interval
            time.sleep(max(0.0, nxt - time.time()))
        Path(out).write_text(json.dumps({"lat": lat}))


def _spawn(role: str, db: Path, out: Path, sync: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--role", role, str(db), str(out), *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(db, sync))


def _go(procs: list[subprocess.Popen[str]], window: float) -> None:
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("a worker did not start")
    t_go = time.time() + 0.2
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{t_go} {t_go + window}\n")
        p.stdin.flush()
    for p in procs:
        if p.wait(window + 120) != 0:
            raise SystemExit(f"a worker failed with exit code {p.returncode}")


def _cell(template: Path, work: Path, tag: str) -> Path:
    cell = work / tag
    cell.mkdir()
    shutil.copy(template, cell / "kanban.db")
    return cell / "kanban.db"


def burn(template: Path, work: Path, workers: int, window: float, sync: str, use_next: bool,
         tag: str) -> dict[str, float]:
    """tasks/s over the window, with the workers' CPU seconds and context switches per task (from getrusage):
    CPU per task is the figure a busy machine disturbs least (other processes stretch wall time, not our CPU)."""
    db = _cell(template, work, tag)
    outs = [db.parent / f"w{k}.json" for k in range(workers)]
    procs = [_spawn("burn", db, o, sync, "1" if use_next else "0") for o in outs]
    _go(procs, window)
    res = [json.loads(o.read_text()) for o in outs]
    shutil.rmtree(db.parent)
    done = sum(r["done"] for r in res) or 1
    return {"tasks_per_s": sum(r["done"] for r in res) / window,
            "cpu_us_per_task": sum(r["cpu_s"] for r in res) / done * 1e6,
            "csw_per_task": sum(r["vcsw"] + r["ivcsw"] for r in res) / done,
            "ivcsw_per_task": sum(r["ivcsw"] for r in res) / done}


def third_writer(template: Path, work: Path, window: float, sync: str, use_next: bool, tag: str) -> list[float]:
    db = _cell(template, work, tag)
    outs = [db.parent / f"w{k}.json" for k in range(2)]
    procs = [_spawn("burn", db, o, sync, "1" if use_next else "0") for o in outs]
    wout = db.parent / "writer.json"
    procs.append(_spawn("writer", db, wout, sync, "0.05"))
    _go(procs, window)
    lat: list[float] = json.loads(wout.read_text())["lat"]
    shutil.rmtree(db.parent)
    return lat


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        role, db, out, extra = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
        if role == "burn":
            role_burn(db, out, extra == "1")
        else:
            role_writer(db, out, float(extra))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--window", type=float, default=1.5, help="seconds measured per cell (default 1.5)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per worker count; the median is reported")
    ap.add_argument("--board", type=int, default=20_000, help="ready tasks on the seeded board (default 20000)")
    ap.add_argument("--sync", default="full", choices=["full", "normal"])
    ap.add_argument("--next", action="store_true", help="workers use complete_next (one commit per task)")
    ap.add_argument("--writer-rounds", type=int, default=3, help="third-writer runs (0: skip)")
    ap.add_argument("--writer-only", action="store_true", help="only the third-writer test")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hermes-contention-") as tmp:
        work = Path(tmp)
        template = work / "template" / "kanban.db"
        template.parent.mkdir()
        seed(template, args.board)
        rates: dict[int, list[dict[str, float]]] = {w: [] for w in counts}
        if not args.writer_only:
            for r in range(args.rounds):
                for w in counts:
                    rates[w].append(burn(template, work, w, args.window, args.sync, args.next, f"r{r}w{w}"))
        lat: list[float] = []
        for r in range(args.writer_rounds):
            lat += third_writer(template, work, args.window * 2, args.sync, args.next, f"writer{r}")
    result: dict[str, object] = {
        "sync": args.sync, "next": args.next, "window_s": args.window, "rounds": args.rounds,
        "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count(),
        "rates": {w: v for w, v in rates.items() if v},
    }
    if lat:
        result["writer_ms"] = {"n": len(lat), "p50": pct(lat, 50) * 1e3, "p99": pct(lat, 99) * 1e3,
                               "max": max(lat) * 1e3}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"contention: synchronous={args.sync}, {'complete_next' if args.next else 'claim + complete'}, "
          f"{args.window} s windows, {args.rounds} rounds, cpus {os.cpu_count()}, load {result['loadavg_1m']}")
    def med(v: list[dict[str, float]], k: str) -> float:
        return statistics.median(x[k] for x in v)

    base = med(rates[counts[0]], "tasks_per_s") if rates[counts[0]] else None
    base_cpu = med(rates[counts[0]], "cpu_us_per_task") if rates[counts[0]] else None
    for w, v in rates.items():
        if not v:
            continue
        m = med(v, "tasks_per_s")
        cpu = med(v, "cpu_us_per_task")
        vs = f" {m / base - 1:+4.0%}" if base else ""
        vc = f" {cpu / base_cpu - 1:+4.0%}" if base_cpu else ""
        each = ", ".join(f"{x['tasks_per_s']:.0f}" for x in v)
        print(f"  {w} worker(s): {m:6.0f} tasks/s{vs}  (rounds: {each}); "
              f"CPU {cpu:5.0f} us/task{vc}; context switches {med(v, 'csw_per_task'):.1f}/task "
              f"({med(v, 'ivcsw_per_task'):.1f} involuntary)")
    if lat:
        wm = result["writer_ms"]
        print(f"  third writer beside 2 burning workers: create p50 {wm['p50']:.1f} ms, p99 {wm['p99']:.1f} ms, "  # type: ignore[index]
              f"max {wm['max']:.1f} ms over {wm['n']} creates")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())
