"""Where a claim and a complete spend their time: statements per transaction, CPU per operation, and a cProfile
split between Python and APSW/SQLite.

    python bench/profile_store.py                    # 2000 tasks, synchronous=NORMAL (CPU, not the disk)
    python bench/profile_store.py --sync full --top 30
    python bench/profile_store.py --json

Three passes over fresh boards of `-n` ready tasks, one process, one transaction per operation (as workers do it):
1. statements: APSW's exec trace records every SQL statement of one claim, one complete and one complete+claim
   (`Board.complete_next`) transaction, BEGIN and COMMIT included;
2. CPU: `time.process_time()` per operation, claim -> complete one task at a time as a pull worker does (CPU time
   is what a busy machine disturbs least: other processes stretch wall time, not our own CPU seconds), with wall
   time next to it;
3. cProfile of the same loop: time inside APSW calls (statement execution in SQLite, row fetching) against
   everything else (Python: building SQL, rows, dataclasses, JSON, the doorbell).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import apsw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _board(home: Path, sync: str, n: int):  # type: ignore[no-untyped-def]
    os.environ["HERMES_HOME"] = str(home)
    os.environ["HERMES_KANBAN_SYNCHRONOUS"] = sync
    from hermes_cli.kanban import Board

    b = Board.open()

    def seed() -> None:
        for i in range(n):
            b.create_task(f"profile task {i}", priority=i % 7)

    b.db.write(seed)
    return b


def _has_next() -> bool:
    from hermes_cli.kanban import Board

    return hasattr(Board, "complete_next")


def statements(home: Path, sync: str) -> dict[str, list[str]]:
    """The SQL of one transaction of each kind (after a few warm-up operations)."""
    b = _board(home, sync, 20)
    out: dict[str, list[str]] = {}
    seen: list[str] = []
    try:
        for _ in range(3):
            c = b.claim(worker="profile", ttl="10m")
            assert c is not None
            b.complete(c.task_id, c.run_id, summary="ok")
        b.db.conn.exec_trace = lambda _cur, sql, _bindings: seen.append(" ".join(sql.split())) or True
        c = b.claim(worker="profile", ttl="10m")
        assert c is not None
        out["claim"], seen[:] = list(seen), []
        b.complete(c.task_id, c.run_id, summary="ok")
        out["complete"], seen[:] = list(seen), []
        if _has_next():
            c = b.claim(worker="profile", ttl="10m")
            assert c is not None
            seen[:] = []
            b.complete_next(c.task_id, c.run_id, summary="ok", worker="profile", ttl="10m")
            out["complete+claim"] = list(seen)
        b.db.conn.exec_trace = None
    finally:
        b.close()
    return out


def _loop(b, n: int, mode: str) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    """(cpu s, wall s) per operation kind over n tasks: claim -> complete per task, or complete+claim chained."""
    out: dict[str, tuple[float, float]] = {}
    if mode == "separate":
        # claim -> complete, one task at a time, as a pull worker does (so one task is running at a time)
        cpu = {"claim": 0.0, "complete": 0.0}
        wall = {"claim": 0.0, "complete": 0.0}
        for _ in range(n):
            c0, w0 = time.process_time(), time.perf_counter()
            c = b.claim(worker="profile", ttl="10m")
            c1, w1 = time.process_time(), time.perf_counter()
            assert c is not None
            b.complete(c.task_id, c.run_id, summary="ok")
            cpu["claim"] += c1 - c0
            wall["claim"] += w1 - w0
            cpu["complete"] += time.process_time() - c1
            wall["complete"] += time.perf_counter() - w1
        out = {k: (cpu[k], wall[k]) for k in cpu}
    else:
        c0, w0 = time.process_time(), time.perf_counter()
        c = b.claim(worker="profile", ttl="10m")
        while c is not None:
            c = b.complete_next(c.task_id, c.run_id, summary="ok", worker="profile", ttl="10m")[1]
        out["complete+claim"] = (time.process_time() - c0, time.perf_counter() - w0)
    assert b.counts()["done"] == n
    return out


def cpu(home: Path, sync: str, n: int) -> dict[str, dict[str, float]]:
    res: dict[str, dict[str, float]] = {}
    modes = ["separate"] + (["next"] if _has_next() else [])
    for mode in modes:
        b = _board(home / f"cpu-{mode}", sync, n)
        try:
            for op, (c, w) in _loop(b, n, mode).items():
                res[op] = {"cpu_us": c / n * 1e6, "wall_us": w / n * 1e6, "ops_per_s": n / w}
        finally:
            b.close()
    return res


def profile(home: Path, sync: str, n: int, top: int, mode: str = "separate") -> dict[str, object]:
    b = _board(home / f"profile-{mode}", sync, n)
    prof = cProfile.Profile()
    try:
        prof.enable()
        _loop(b, n, mode)
        prof.disable()
    finally:
        b.close()
    st = pstats.Stats(prof)
    total = st.total_tt  # type: ignore[attr-defined]
    rows = []
    apsw_s = 0.0
    for (file, line, name), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        label = name if file == "~" else f"{Path(file).name}:{line}({name})"
        if file == "~" and "apsw" in name:
            apsw_s += tt
        rows.append((tt, ct, nc, label))
    rows.sort(reverse=True)
    return {
        "total_s": total,
        "apsw_s": apsw_s,
        "python_s": total - apsw_s,
        "per_task_us": total / n * 1e6,
        "top": [{"tottime_s": tt, "cumtime_s": ct, "calls": nc, "function": label} for tt, ct, nc, label in rows[:top]],
    }


class _TimedConn:
    """Stands in for the APSW connection and times every execute() by the statement's first words."""

    def __init__(self, conn, times: dict[str, list[float]]) -> None:  # type: ignore[no-untyped-def]
        self._conn = conn
        self._times = times

    def execute(self, sql: str, params=()):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        cur = self._conn.execute(sql, params)
        try:
            desc = cur.get_description()
        except apsw.ExecutionCompleteError:  # a statement that returns no rows has no description
            desc = ()
        rows = list(cur)  # the store reads every row it asks for; fetching is part of the statement's cost
        took = time.perf_counter() - t0
        self._times.setdefault(" ".join(sql.split())[:60], []).append(took)
        return _Rows(rows, desc)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._conn, name)


class _Rows(list):  # type: ignore[type-arg]
    def __init__(self, rows, desc) -> None:  # type: ignore[no-untyped-def]
        super().__init__(rows)
        self._desc = desc

    def get_description(self):  # type: ignore[no-untyped-def]
        return self._desc

    def fetchall(self):  # type: ignore[no-untyped-def]
        return list(self)


def statement_times(home: Path, sync: str, n: int) -> dict[str, dict[str, float]]:
    """Wall time per statement kind (prepare from APSW's cache, bind, step, fetch) over a claim/complete loop."""
    b = _board(home / "stmt-times", sync, n)
    times: dict[str, list[float]] = {}
    real = b.db.conn
    b.db.conn = _TimedConn(real, times)  # type: ignore[assignment]
    try:
        _loop(b, n, "separate")
    finally:
        b.db.conn = real
        b.close()
    return {k: {"calls": len(v), "us_each": sum(v) / len(v) * 1e6, "us_per_task": sum(v) / n * 1e6}
            for k, v in sorted(times.items(), key=lambda kv: -sum(kv[1]))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--tasks", type=int, default=2000)
    ap.add_argument("--sync", default="normal", choices=["normal", "full"])
    ap.add_argument("--top", type=int, default=20, help="functions listed by own time (default 20)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile-next", action="store_true", help="profile the complete_next loop instead")
    args = ap.parse_args(argv)
    env = {"python": platform.python_version(), "sqlite": apsw.sqlite_lib_version(), "cpus": os.cpu_count(),
           "loadavg_1m": round(os.getloadavg()[0], 2), "synchronous": args.sync, "tasks": args.tasks}
    with tempfile.TemporaryDirectory(prefix="hermes-profile-") as tmp:
        base = Path(tmp)
        result = {
            "environment": env,
            "statements": statements(base / "stmts", args.sync),
            "cpu": cpu(base, args.sync, args.tasks),
            "profile": profile(base, args.sync, args.tasks, args.top, "next" if args.profile_next else "separate"),
            "statement_times": statement_times(base, args.sync, args.tasks),
        }
    env["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("hermes kanban store profile: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    for kind, sqls in result["statements"].items():  # type: ignore[union-attr]
        print(f"\n{kind}: {len(sqls)} statements in one transaction")
        for sql, k in Counter(sqls).items():
            print(f"  {k} x {sql[:110]}")
    print("\nper operation      cpu us   wall us    ops/s")
    for op, r in result["cpu"].items():  # type: ignore[union-attr]
        print(f"  {op:<15}{r['cpu_us']:>8.0f}{r['wall_us']:>10.0f}{r['ops_per_s']:>9.0f}")
    print("\nstatement (first 60 chars)                                      calls  us each  us/task")
    for sql, r in result["statement_times"].items():  # type: ignore[union-attr]
        print(f"  {sql:<62}{r['calls']:>7}{r['us_each']:>9.1f}{r['us_per_task']:>9.1f}")
    p = result["profile"]
    what = "complete_next" if args.profile_next else "claim+complete"
    print(f"\ncProfile of {what} over {args.tasks} tasks: {p['per_task_us']:.0f} us per task under the "  # type: ignore[index]
          f"profiler; APSW/SQLite {p['apsw_s'] / p['total_s']:.0%}, Python {p['python_s'] / p['total_s']:.0%}")  # type: ignore[index]
    print(f"  {'own s':>7} {'cum s':>7} {'calls':>7}  function")
    for r in p["top"]:  # type: ignore[index]
        print(f"  {r['tottime_s']:7.3f} {r['cumtime_s']:7.3f} {r['calls']:7d}  {r['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
