"""What the fail-closed open adds to every `hermes kanban` call, by board size.

    /work/venv/bin/python bench/durability_open_cost.py [--sizes 1000,10000,50000] [--repeat 7]

For each board size it prints (medians, milliseconds):
- quick_check        PRAGMA quick_check alone on the open board
- open (no check)    connect() with verify=False: header read only
- open (cache hit)   connect() when the file state was already checked (a stat and a small JSON read)
- open (cache miss)  connect() when it was not (header + quick_check + remembering the result)
- create hit/miss    wall time of a real `hermes kanban create` process, with another process holding the board
                     open (so the db file does not change between calls: the cache hits), and with the cache
                     removed before each call (every call runs quick_check)

A CLI-only workflow checkpoints the WAL into the db file when its last connection closes, so each call sees a changed
file and pays the miss; with a dispatcher or TUI holding the board (the normal case), calls hit the cache until the
next autocheckpoint. Figures are noisy on a shared machine: re-run at a quiet moment.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.1f}"


def build(home: Path, n: int) -> Path:
    os.environ["HERMES_HOME"] = str(home)
    from hermes_cli.kanban import Board

    with Board.open() as b:
        def many() -> None:
            for i in range(n):
                b.create_task(f"task {i}", body="x" * 200, priority=i % 10)

        b.db.write(many)
        return b.paths.db


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    from hermes_cli.kanban.core.paths import resolve
    from hermes_cli.kanban.store import health as store_health
    from hermes_cli.kanban.store.opening import connect

    print(f"{'tasks':>7} {'db MiB':>7} {'quick_check':>12} {'open nochk':>11} {'open hit':>9} {'open miss':>10} "
          f"{'create hit':>11} {'create miss':>12}")
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            db = build(Path(tmp), n)
            paths = resolve("default")
            qc, nochk, hit, miss = [], [], [], []
            for _ in range(args.repeat):
                d = connect(paths, create=False, verify=False)
                t0 = time.perf_counter()
                store_health.quick_check(d.conn)
                qc.append(time.perf_counter() - t0)
                d.close()
                t0 = time.perf_counter()
                connect(paths, create=False, verify=False).close()
                nochk.append(time.perf_counter() - t0)
                store_health.forget_check(paths)
                t0 = time.perf_counter()
                connect(paths, create=False).close()
                miss.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                connect(paths, create=False).close()
                hit.append(time.perf_counter() - t0)
            holder = subprocess.Popen([sys.executable, "-c", (
                "import sys; from hermes_cli.kanban import Board; b = Board.open(); b.counts(); print('open', "
                "flush=True); sys.stdin.read()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert holder.stdout is not None and holder.stdin is not None
            holder.stdout.readline()
            c_hit, c_miss = [], []
            cmd = [sys.executable, "-m", "hermes_cli.main", "kanban", "create", "bench"]
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                c_hit.append(time.perf_counter() - t0)
                store_health.forget_check(paths)
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                c_miss.append(time.perf_counter() - t0)
            holder.stdin.close()
            holder.wait()
            size = db.stat().st_size + (Path(f"{db}-wal").stat().st_size if Path(f"{db}-wal").exists() else 0)
            print(f"{n:>7} {size / (1 << 20):>7.1f} {ms(qc):>12} {ms(nochk):>11} {ms(hit):>9} {ms(miss):>10} "
                  f"{ms(c_hit):>11} {ms(c_miss):>12}")


if __name__ == "__main__":
    main()
