"""Notification latency: a completion committed in another process -> seen by a reader, p50/p90/p99/max.

    python bench/notify_latency.py                 # 300 completions; about 60 s
    python bench/notify_latency.py -n 100 --json

Three readers watch the same stream of completions at once, on one fresh board:
- `events --follow`: the real `hermes kanban events --follow --kinds completed --json` process, woken by the
  board's FIFO doorbell;
- the TUI: the real app (headless, in this process), twice: until the event reaches its toast logic (a toast, or
  a line of the summary toast when completions come faster than 4 per 2 s), and until the `done` count it shows
  includes the completion (after the coalesced refresh); the next screen update draws either, at most 1/60 s later;
- a 5 s polling reader for comparison: a process that reads `events` after its cursor every 5 s (what the
  upstream TUI gateway did).
A writer process completes ready tasks one by one, at random intervals (exponential, mean --gap), and stamps
CLOCK_MONOTONIC (system-wide on Linux, so comparable across processes) just before each `complete()` call: each
latency includes the commit itself (fsync of the WAL with the default synchronous=FULL). Readers' lines are
stamped on arrival in this process. Nothing is asserted; figures depend on the machine's load, which is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

POLL_S = 5.0


# -- roles run as separate processes --------------------------------------------------------------------------------
def role_writer(n: int, gap: float, seed: int, start_file: Path) -> None:
    from hermes_cli.kanban import Board

    rng = random.Random(seed)
    with Board.open() as b:
        ready = [t.id for t in b.list_tasks(status="ready", limit=n)]
        while not start_file.exists():
            time.sleep(0.01)
        for task_id in ready:
            time.sleep(rng.expovariate(1 / gap))
            t = time.monotonic()
            b.complete(task_id, summary="bench")
            print(f"{task_id} {t:.6f}", flush=True)


def role_poller(interval: float) -> None:
    from hermes_cli.kanban import Board

    with Board.open() as b:
        cursor = b.last_event_id()
        print("ready", flush=True)
        while True:
            time.sleep(interval)
            for e in b.events(cursor, kinds=["completed"]):
                print(e.task_id, flush=True)
                cursor = e.id


# -- the bench --------------------------------------------------------------------------------------------------------
def _stamp_lines(stream: IO[str], into: dict[str, float], parse: Any) -> None:
    for line in stream:
        key = parse(line)
        if key:
            into.setdefault(key, time.monotonic())


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _summary(name: str, committed: dict[str, float], seen: dict[str, float]) -> dict[str, Any]:
    lat = [(seen[k] - t) * 1000 for k, t in committed.items() if k in seen]
    out: dict[str, Any] = {"reader": name, "n": len(lat), "missed": len(committed) - len(lat)}
    if lat:
        out.update(p50_ms=_pct(lat, 0.50), p90_ms=_pct(lat, 0.90), p99_ms=_pct(lat, 0.99), max_ms=max(lat))
    return out


def _env() -> dict[str, Any]:
    import apsw

    from hermes_cli.kanban.store.connection import filesystem_type

    return {
        "python": platform.python_version(), "sqlite": apsw.sqlite_lib_version(), "cpus": os.cpu_count(),
        "filesystem": filesystem_type(os.environ["HERMES_HOME"]), "loadavg_1m": round(os.getloadavg()[0], 2),
        "synchronous": os.environ.get("HERMES_KANBAN_SYNCHRONOUS", "full"),
    }


async def _tui_watch(seen: dict[str, float], done_counts: list[tuple[float, int]], stop: threading.Event,
                     ready: threading.Event) -> None:
    from textual import on

    from tui.app import KanbanApp
    from tui.loader import BoardLoader
    from tui.watcher import DoorbellWatcher

    class MeasuredApp(KanbanApp):
        """The real app, with two stamps taken from the messages that reach it: when a completion event reaches
        the app (the doorbell watcher's BoardChanged, which the board screen turns into a toast), and when a
        refresh's `done` count includes a completion (completions are counted in commit order)."""

        @on(DoorbellWatcher.BoardChanged)
        def _stamp_events(self, message: DoorbellWatcher.BoardChanged) -> None:
            now = time.monotonic()
            for e in message.events:
                if e.kind == "completed" and e.task_id:
                    seen.setdefault(e.task_id, now)

        @on(BoardLoader.Refreshed)
        @on(BoardLoader.BoardOpened)
        def _stamp_counts(self, message: BoardLoader.Refreshed | BoardLoader.BoardOpened) -> None:
            if message.counts is not None:
                done_counts.append((time.monotonic(), message.counts.get("done", 0)))

    app = MeasuredApp(subscription="bench-tui")
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        while app._watch_reader is None:  # the doorbell worker is listening
            await pilot.pause(0.01)
        ready.set()
        while not stop.is_set():
            await pilot.pause(0.05)


def bench(n: int, gap: float, seed: int, use_tui: bool) -> dict[str, Any]:
    from hermes_cli.kanban import Board

    with Board.open() as b:
        b.db.write(lambda: [b.create_task(f"latency task {i}") for i in range(n)])
    start_file = Path(os.environ["HERMES_HOME"]) / "go"
    me = [sys.executable, os.path.abspath(__file__)]
    follow = subprocess.Popen([sys.executable, "-m", "hermes_cli.main", "kanban", "events", "--follow", "--kinds",
                               "completed", "--json"], stdout=subprocess.PIPE, text=True)
    poller = subprocess.Popen([*me, "--role", "poller"], stdout=subprocess.PIPE, text=True)
    writer = subprocess.Popen([*me, "--role", "writer", "-n", str(n), "--gap", str(gap), "--seed", str(seed),
                               "--start-file", str(start_file)], stdout=subprocess.PIPE, text=True)
    committed: dict[str, float] = {}
    seen_follow: dict[str, float] = {}
    seen_poll: dict[str, float] = {}
    seen_tui: dict[str, float] = {}
    done_counts: list[tuple[float, int]] = []  # (when, done count shown) as the TUI applied counts
    order: list[str] = []  # completions in commit order (the writer's order)
    assert follow.stdout and poller.stdout and writer.stdout
    assert poller.stdout.readline().strip() == "ready"
    threads = [
        threading.Thread(target=_stamp_lines, args=(follow.stdout, seen_follow,
                                                    lambda ln: json.loads(ln)["task_id"]), daemon=True),
        threading.Thread(target=_stamp_lines, args=(poller.stdout, seen_poll, lambda ln: ln.strip()), daemon=True),
    ]
    for t in threads:
        t.start()
    stop, tui_ready = threading.Event(), threading.Event()
    tui_thread = None
    if use_tui:
        tui_thread = threading.Thread(
            target=lambda: asyncio.run(_tui_watch(seen_tui, done_counts, stop, tui_ready)), daemon=True)
        tui_thread.start()
        tui_ready.wait(60)
    # The follower is listening once its FIFO exists (it reads the log from "now" on).
    notify_dir = Path(os.environ["HERMES_HOME"]) / "kanban" / "boards" / "default" / "notify"
    while len([p for p in notify_dir.glob("*.events-follow.*.fifo")]) < 1:
        time.sleep(0.01)
    start_file.touch()
    for line in writer.stdout:
        task_id, t = line.split()
        committed[task_id] = float(t)
        order.append(task_id)
    writer.wait()
    time.sleep(POLL_S + 1.0)  # let the poller's last cycle pass
    stop.set()
    if tui_thread is not None:
        tui_thread.join(30)
    for p in (follow, poller):
        p.terminate()
        p.wait(30)
    rows = [_summary("events --follow (doorbell)", committed, seen_follow)]
    if use_tui:
        rows.append(_summary("TUI: event handled (toast)", committed, seen_tui))
        # The k-th completion (commit order) is on screen once the done count shown reaches k.
        seen_count = {}
        for k, task_id in enumerate(order, start=1):
            when = next((t for t, n in done_counts if n >= k), None)
            if when is not None:
                seen_count[task_id] = when
        rows.append(_summary("TUI: done count on screen", committed, seen_count))
    rows.append(_summary(f"polling every {POLL_S:.0f} s", committed, seen_poll))
    return {"completions": len(committed), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300, help="completions (default 300)")
    ap.add_argument("--gap", type=float, default=0.15, help="mean seconds between completions (default 0.15)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-tui", action="store_true", help="skip the TUI reader")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--role", choices=["writer", "poller"], help=argparse.SUPPRESS)
    ap.add_argument("--start-file", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "writer":
        return role_writer(args.n, args.gap, args.seed, args.start_file)
    if args.role == "poller":
        return role_poller(POLL_S)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `tui` from this checkout
    with tempfile.TemporaryDirectory(prefix="hermes-latency-") as home:
        os.environ["HERMES_HOME"] = home
        env = _env()
        result = bench(args.n, args.gap, args.seed, not args.no_tui)
        env["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    result["env"] = env
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"hermes kanban notification latency: {result['completions']} completions, mean gap {args.gap}s")
    print("  " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print(f"  {'reader':<28} {'n':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'max ms':>9} {'missed':>7}")
    for r in result["rows"]:
        if r["n"]:
            print(f"  {r['reader']:<28} {r['n']:>5} {r['p50_ms']:>9.1f} {r['p90_ms']:>9.1f} {r['p99_ms']:>9.1f} "
                  f"{r['max_ms']:>9.1f} {r['missed']:>7}")
        else:
            print(f"  {r['reader']:<28} {0:>5} {'-':>9} {'-':>9} {'-':>9} {'-':>9} {r['missed']:>7}")


if __name__ == "__main__":
    main()
