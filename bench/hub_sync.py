"""Hub sync: replication lag at a steady event rate, and sync throughput next to the raw insert rate of the same
PostgreSQL (the physical limit here).

    python bench/hub_sync.py                      # 100 events/s for 20 s; 10,000 events of backlog; about 2 min
    python bench/hub_sync.py --rate 100 --seconds 10 --events 5000 --outage-seconds 10 --json

It starts a throwaway PostgreSQL server (store/pg/server.py; PostgreSQL's default durability: fsync and
synchronous_commit on) as the hub, and a local SQLite board under a temporary HERMES_HOME.

1. Lag: the real `hermes kanban sync --follow` process runs while this process creates tasks at --rate events/s
   (one event per create, each its own transaction, synchronous=FULL). A poller thread reads the hub's ack every
   2 ms; an event's lag is from just after its local COMMIT returned to the first poll that saw the hub's ack reach
   it (so it includes the doorbell, the batch read, the hub transaction and up to 2 ms of polling).
2. Throughput: a board with --events events of backlog (created beforehand), then one `Sync.run(follow=False)` in
   this process (batches of --batch events, one hub transaction each): events/s from start to caught up.
3. Raw insert rate: rows of the same shape inserted straight into a table in the same PostgreSQL, --batch rows per
   transaction (the same batching, no sync logic): rows/s. The ratio 2/3 is the sync's overhead.
4. Outage: with the hub stopped, --workers processes claim -> complete for --outage-seconds on a board with no hub
   and for as long on a board whose `sync --follow` keeps retrying the hub, in alternating halves (ABBA, same run):
   the completion counts and their ratio, the `doctor` sync line during the outage, and how long after the server
   is back the hub's ack reaches the board.
Nothing is asserted; the figures depend on the machine's load, which is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def hub_ack(conn: Any, bid: str) -> int:
    if conn.execute("SELECT to_regclass('hermes_hub.acks')").fetchone()[0] is None:
        return 0  # the follower has not created the hub's schema yet
    row = conn.execute("SELECT last_event_id FROM hermes_hub.acks WHERE board_id = %s", (bid,)).fetchone()
    return int(row[0]) if row else 0


def measure_lag(url: str, rate: float, seconds: float) -> dict[str, Any]:

    from hermes_cli.kanban import Board

    with Board.open("lag", create=True) as b:
        b.create_task("first")
    env = {**os.environ, "HERMES_KANBAN_BOARD": "lag"}
    follower = subprocess.Popen([sys.executable, "-m", "hermes_cli.main", "kanban", "sync", "--hub", url, "--follow",
                                 "--quiet", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    committed: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()
    try:
        _lag_run(url, rate, seconds, committed, seen, stop)
    finally:
        follower.terminate()  # also when the run failed: never leave a sync behind
        out, err = follower.communicate(timeout=60)
    lags = [seen[i] - t for i, t in committed.items() if i in seen]
    return {"events": len(committed), "rate": rate, "seen": len(lags), "p50_ms": round(pct(lags, 50) * 1000, 1),
            "p99_ms": round(pct(lags, 99) * 1000, 1), "max_ms": round(max(lags) * 1000, 1),
            "follower_exit": follower.returncode}


def _lag_run(url: str, rate: float, seconds: float, committed: dict[int, float], seen: dict[int, float],
             stop: threading.Event) -> None:
    import psycopg

    from hermes_cli.kanban import Board

    with Board.open("lag") as b:
        deadline = time.monotonic() + 60
        bid = None
        while bid is None and time.monotonic() < deadline:
            bid = b.db.value("SELECT value FROM meta WHERE key = 'board_id'")
            time.sleep(0.05)
        assert bid is not None, "the follower never started"
        conn = psycopg.connect(url, autocommit=True)
        while hub_ack(conn, bid) < 1:
            time.sleep(0.05)

        def poll() -> None:
            last = 0
            while not stop.is_set():
                ack = hub_ack(conn, bid)
                now = time.monotonic()
                for i in range(last + 1, ack + 1):
                    seen[i] = now
                last = max(last, ack)
                time.sleep(0.002)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        n = int(rate * seconds)
        start = time.monotonic()
        for i in range(n):
            target = start + i / rate
            pause = target - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            b.create_task(f"lag {i}")
            committed[int(b.db.value("SELECT max(id) FROM events"))] = time.monotonic()
        last_id = max(committed)
        wait_until = time.monotonic() + 30
        while last_id not in seen and time.monotonic() < wait_until:
            time.sleep(0.01)
        stop.set()
        poller.join()
        conn.close()


def measure_throughput(url: str, events: int, batch: int) -> dict[str, Any]:
    from hermes_cli.kanban import Board
    from hermes_cli.kanban.hub.sync import Sync

    os.environ["HERMES_KANBAN_SYNCHRONOUS"] = "normal"  # only to build the backlog faster; the sync reads it
    with Board.open("backlog", create=True) as b:
        for i in range(events):
            b.create_task(f"backlog {i}")
    del os.environ["HERMES_KANBAN_SYNCHRONOUS"]
    with Board.open("backlog") as b:
        t0 = time.perf_counter()
        result = Sync(b, url, batch=batch).run(follow=False)
        took = time.perf_counter() - t0
    return {"events": result.sent, "batches": result.batches, "seconds": round(took, 3),
            "events_per_s": round(result.sent / took)}


WORKER = """
import sys, time
from hermes_cli.kanban import Board
deadline = float(sys.argv[1])
n = 0
with Board.open() as b:
    while time.time() < deadline:
        c = b.claim(worker="bench")
        if c is None:
            break
        b.complete(c.task_id, c.run_id, summary="ok")
        n += 1
print(n)
"""


def burn(slug: str, workers: int, seconds: float) -> int:
    """`workers` processes claim -> complete on board `slug` for `seconds`; completions."""
    env = {**os.environ, "HERMES_KANBAN_BOARD": slug}
    deadline = time.time() + seconds
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(deadline)], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(workers)]
    return sum(int(p.communicate(timeout=seconds + 120)[0].strip() or 0) for p in procs)


def measure_outage(server: Any, seconds: float, workers: int, tasks: int) -> dict[str, Any]:
    """`workers` processes completing tasks for `seconds` on a board with no hub and for `seconds` on one whose
    `sync --follow` hub is down, in alternating halves (no hub, hub down, hub down, no hub: drift in the machine's
    load cancels out); the backlog doctor shows; how long the hub takes to converge once it is back."""
    from hermes_cli.kanban import Board

    url = server.url
    os.environ["HERMES_KANBAN_SYNCHRONOUS"] = "normal"  # only to create the tasks faster
    for slug in ("nohub", "hubdown"):
        with Board.open(slug, create=True) as b:
            for i in range(tasks):
                b.create_task(f"{slug} {i}")
    del os.environ["HERMES_KANBAN_SYNCHRONOUS"]
    env = {**os.environ, "HERMES_KANBAN_BOARD": "hubdown", "HERMES_KANBAN_PG_CONNECT_TIMEOUT": "2"}
    follower = subprocess.Popen([sys.executable, "-m", "hermes_cli.main", "kanban", "sync", "--hub", url, "--follow",
                                 "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return _outage_run(server, url, env, tasks=tasks, seconds=seconds, workers=workers)
    finally:
        follower.terminate()  # also when the run failed: never leave a sync behind
        follower.wait(60)


def _outage_run(server: Any, url: str, env: dict[str, str], *, tasks: int, seconds: float,
                workers: int) -> dict[str, Any]:
    import psycopg

    from hermes_cli.kanban import Board

    with Board.open("hubdown") as b:
        while b.db.value("SELECT value FROM meta WHERE key = 'board_id'") is None:
            time.sleep(0.05)
        bid = b.db.value("SELECT value FROM meta WHERE key = 'board_id'")
    with psycopg.connect(url, autocommit=True) as conn:
        while hub_ack(conn, bid) < tasks:
            time.sleep(0.05)
    server.stop(remove=False)
    down_at = time.monotonic()
    without = burn("nohub", workers, seconds / 2)
    with_hub_down = burn("hubdown", workers, seconds / 2) + burn("hubdown", workers, seconds / 2)
    without += burn("nohub", workers, seconds / 2)
    doctor = subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", "doctor", "--json"],
                            env={**env, "HERMES_KANBAN_HUB_URL": url}, capture_output=True, text=True)
    finding = next(f for f in json.loads(doctor.stdout)["findings"] if f["check"] == "sync")
    with Board.open("hubdown") as b:
        last = int(b.db.value("SELECT max(id) FROM events"))
    down_for = time.monotonic() - down_at
    server.start()
    back = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        while hub_ack(conn, bid) < last and time.monotonic() - back < 120:
            time.sleep(0.01)
        converged = time.monotonic() - back
    return {"seconds": seconds, "workers": workers, "completed_without_hub": without,
            "completed_hub_down": with_hub_down, "ratio": round(with_hub_down / max(without, 1), 3),
            "doctor_during_outage": finding["message"], "pending_during_outage": finding["data"]["pending"],
            "converged_s": round(converged, 2), "hub_down_s": round(down_for, 1)}


def measure_raw(url: str, rows: int, batch: int) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS raw_events(board_id text, id bigint, task_id text, run_id bigint, "
                     "kind text, payload text, created_at float8, received_at float8, PRIMARY KEY (board_id, id))")
        conn.execute("TRUNCATE raw_events")
        payload = json.dumps({"title": "backlog 0", "priority": 0, "status": "ready"})
        t0 = time.perf_counter()
        for start in range(0, rows, batch):
            ids = list(range(start + 1, min(rows, start + batch) + 1))
            with conn.transaction():
                conn.execute(
                    "INSERT INTO raw_events SELECT 'b', u.*, extract(epoch FROM clock_timestamp()) FROM "
                    "unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::float8[]) AS u",
                    (ids, ["t_000000000000"] * len(ids), [None] * len(ids), ["created"] * len(ids),
                     [payload] * len(ids), [time.time()] * len(ids)))
        took = time.perf_counter() - t0
    return {"rows": rows, "batch": batch, "seconds": round(took, 3), "rows_per_s": round(rows / took)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=100.0, help="events/s for the lag measurement (default 100)")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to write at --rate (default 20)")
    ap.add_argument("--events", type=int, default=10000, help="backlog for the throughput measurement")
    ap.add_argument("--batch", type=int, default=500, help="events per batch / rows per raw transaction")
    ap.add_argument("--outage-seconds", type=float, default=30.0,
                    help="hub down this long while --workers complete tasks (0: skip; default 30)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    home = tempfile.mkdtemp(prefix="hub-bench-")
    os.environ["HERMES_HOME"] = home
    for var in ("HERMES_KANBAN_URL", "HERMES_KANBAN_DB", "HERMES_KANBAN_BOARD", "HERMES_KANBAN_SYNC"):
        os.environ.pop(var, None)
    from hermes_cli.kanban.store.pg.server import ThrowawayServer

    with ThrowawayServer(fsync=True) as server:
        url = server.url
        lag = measure_lag(url, args.rate, args.seconds)
        thr = measure_throughput(url, args.events, args.batch)
        raw = measure_raw(url, args.events, args.batch)
        outage = measure_outage(server, args.outage_seconds, args.workers, 20000) if args.outage_seconds else None
    out = {"lag": lag, "throughput": thr, "raw_insert": raw, "outage": outage,
           "sync_vs_raw": round(thr["events_per_s"] / raw["rows_per_s"], 3),
           "machine": {"cpus": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version()}}
    if args.json:
        print(json.dumps(out))
        return
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"lag at {lag['rate']:g} events/s ({lag['events']} events, {lag['seen']} seen on the hub): "
          f"p50 {lag['p50_ms']} ms, p99 {lag['p99_ms']} ms, max {lag['max_ms']} ms")
    print(f"sync throughput: {thr['events']} events in {thr['seconds']} s ({thr['batches']} batches) = "
          f"{thr['events_per_s']} events/s")
    print(f"raw insert into the same PostgreSQL: {raw['rows']} rows in {raw['seconds']} s (batches of "
          f"{raw['batch']}) = {raw['rows_per_s']} rows/s; sync/raw = {out['sync_vs_raw']}")
    if outage:
        print(f"hub down {outage['hub_down_s']:g} s; {outage['workers']} workers claim -> complete for "
              f"{outage['seconds']:g} s on each board: "
              f"{outage['completed_hub_down']} completions vs {outage['completed_without_hub']} on a board without a "
              f"hub (ratio {outage['ratio']}); doctor during the outage: {outage['doctor_during_outage']}; hub "
              f"converged {outage['converged_s']} s after it was back")


if __name__ == "__main__":
    main()
