"""The TUI on a big board: time to open, responsiveness, resident memory. Also makes the docs screenshot.

    python bench/tui_bench.py                       # a 100,000-task board; about 30 s
    python bench/tui_bench.py --tasks 20000 --json
    python bench/tui_bench.py --screenshot docs/tui.svg   # a busy board with a live dispatcher -> SVG (+ PNG)

Measure mode seeds a board (statuses spread like a long-lived board: mostly done, thousands ready, some running,
blocked, in review, waiting and archived; runs and events to match) in one transaction, then starts a fresh
process that runs the real app headless (Textual's run_test, 200x60) and prints:
- open: from that process's first line (before importing anything) to the board painted with its counts and the
  first page of every column, and the import share of it;
- responsiveness: key action -> the cards under the cursor loaded (painted at the next frame), for End in the
  biggest column, a jump to its middle, ten PageDowns, and a filter (title text) applied to every count and
  column; then the event-loop lag while another process completes 1,000 tasks as fast as it can;
- memory: resident set size after all that (psutil), and the peak (ru_maxrss).
Targets from the issue: open < 1.5 s and RSS < 300 MB on 100,000 tasks. Nothing is asserted; the load average is
printed, since figures taken while other work runs are noisy.
"""

from __future__ import annotations

import time

PROCESS_START = time.monotonic()

import argparse  # noqa: E402  (PROCESS_START must be taken before any import)
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZE = (200, 60)
#: share of each status on the seeded board (the rest are done)
SPREAD = {"ready": 0.15, "todo": 0.04, "running": 0.01, "review": 0.03, "blocked": 0.03, "archived": 0.08}
WORDS = ("fetch", "parse", "summarise", "deploy", "index", "review", "retry", "backfill", "migrate", "report",
         "logs", "data", "tenant", "cache", "invoice", "model", "eval", "shard", "queue", "alert")


# -- seeding ----------------------------------------------------------------------------------------------------------
def seed_large(n: int, seed: int = 1) -> dict[str, int]:
    """n tasks in one transaction through the store's own SQL (created events, runs for worked-on tasks)."""
    from hermes_cli.kanban import Board
    from hermes_cli.kanban.domain.board import new_task_id
    from hermes_cli.kanban.store import tasks as sql

    rng = random.Random(seed)
    now = time.time()
    statuses = []
    for status, share in SPREAD.items():
        statuses += [status] * int(n * share)
    statuses += ["done"] * (n - len(statuses))
    rng.shuffle(statuses)
    with Board.open() as b:

        def tx() -> None:
            for i, status in enumerate(statuses):
                created = now - rng.uniform(60, 30 * 86400)
                task_id = new_task_id()
                title = f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{i}"
                tenant = rng.choice((None, None, "ops", "research", "billing"))
                attempts = 0 if status in ("ready", "todo") else rng.randint(1, 3)
                sql.insert_task(b.db, {
                    "id": task_id, "title": title, "body": "", "status": status, "priority": rng.randint(-2, 9),
                    "tenant": tenant, "created_at": created, "updated_at": created + 5, "attempts": attempts,
                    "summary": "ok" if status == "done" else None,
                    "completed_at": created + 60 if status == "done" else None,
                })
                sql.add_event(b.db, "created", created, task_id, title=title, status=status)
                if attempts:
                    run = sql.insert_run(b.db, task_id, created + 1, created + 121, "bench", "host", None, None)
                    if status == "running":
                        sql.update_task(b.db, task_id, created + 1, current_run_id=run, lease_expires_at=now + 3600)
                    else:
                        outcome = {"done": "completed", "review": "review_requested", "blocked": "blocked"}.get(
                            status, "completed")
                        sql.close_run(b.db, run, outcome, created + 60, "bench")
                        sql.add_event(b.db, outcome if outcome != "review_requested" else "review_requested",
                                      created + 60, task_id, run, summary="bench", title=title)

        b.db.write(tx)
        return b.counts()


# -- measuring (in a fresh process) -----------------------------------------------------------------------------------
async def _until(pilot: Any, check: Any, timeout: float = 30.0) -> float:
    """Seconds until `check()` holds (polling the app between screen updates)."""
    t = time.monotonic()
    while not check():
        if time.monotonic() - t > timeout:
            raise TimeoutError("the TUI did not get there in time")
        await pilot.pause(0.002)
    return time.monotonic() - t


STORM = 1_000
STORM_WRITER = (
    "import sys\n"
    "from hermes_cli.kanban import Board\n"
    "with Board.open() as b:\n"
    "    for t in b.list_tasks(status='ready', limit=int(sys.argv[1])):\n"
    "        b.complete(t.id, summary='storm')\n"
)


async def _storm(pilot: Any, app: Any) -> dict[str, Any]:
    """Event-loop lag while another process completes STORM tasks as fast as it can: every completion is an
    event, a doorbell ring, a toast and (coalesced) a refresh; SQLite runs in threads, so the loop stays free."""
    first = app.handled_upto
    writer = subprocess.Popen([sys.executable, "-c", STORM_WRITER, str(STORM)], env=dict(os.environ))
    lags: list[float] = []
    t0 = time.monotonic()
    while writer.poll() is None or app.handled_upto < first + STORM:
        t = time.monotonic()
        await asyncio.sleep(0.005)
        lags.append(time.monotonic() - t - 0.005)
        if time.monotonic() - t0 > 120:
            break
    took = time.monotonic() - t0
    lags.sort()
    return {"storm_events": app.handled_upto - first, "storm_s": took,
            "storm_lag_p50_ms": lags[len(lags) // 2] * 1000, "storm_lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000,
            "storm_lag_max_ms": lags[-1] * 1000}


def role_measure() -> None:
    t_imports = time.monotonic()
    sys.path.insert(0, str(ROOT))
    import psutil

    from tui.app import KanbanApp
    from tui.widgets.column import TaskColumn

    imported = time.monotonic()

    async def run() -> dict[str, Any]:
        app = KanbanApp()
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, lambda: app.board_ready)
            await pilot.pause()  # the first paint after the data arrived
            painted = time.monotonic()
            biggest = max(app.visible_columns(), key=lambda c: c.count)
            biggest.focus()
            await pilot.pause()
            loaded = lambda col=biggest: col.task_at(col.cursor) is not None  # noqa: E731
            out: dict[str, Any] = {"open_s": painted - PROCESS_START, "imports_s": imported - t_imports,
                                   "biggest_column": biggest.status, "biggest_count": biggest.count}
            # Key handlers are called directly (what the bindings run): Pilot.press adds its own idle waits.
            t = time.monotonic()
            biggest.action_jump(-1)
            await _until(pilot, loaded)
            out["end_ms"] = (time.monotonic() - t) * 1000
            t = time.monotonic()
            biggest.cursor = biggest.count // 2
            await _until(pilot, loaded)
            out["jump_middle_ms"] = (time.monotonic() - t) * 1000
            t = time.monotonic()
            for _ in range(10):
                biggest.action_page(1)
                await _until(pilot, loaded)
            out["ten_pagedowns_ms"] = (time.monotonic() - t) * 1000
            t = time.monotonic()
            gen = app.view_gen
            app.apply_filter("deploy")
            await _until(pilot, lambda: app.view_gen > gen and not app._refresh_running
                         and all(c.task_at(0) is not None or c.count == 0 for c in app.visible_columns()))
            out["filter_ms"] = (time.monotonic() - t) * 1000
            out["filtered_total"] = sum(c.count for c in app.query(TaskColumn))
            app.apply_filter("")
            await _until(pilot, lambda: not app._refresh_running)
            out.update(await _storm(pilot, app))
            out["rss_mb"] = psutil.Process().memory_info().rss / 2**20
            out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            return out

    print(json.dumps(asyncio.run(run())))


def measure(n: int) -> dict[str, Any]:
    t = time.monotonic()
    counts = seed_large(n)
    seeded = time.monotonic() - t
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--role", "measure"], capture_output=True,
                       text=True, timeout=600, env=dict(os.environ))
    if p.returncode != 0:
        raise SystemExit(f"measuring failed:\n{p.stderr}")
    out = json.loads(p.stdout.splitlines()[-1])
    out.update(tasks=sum(counts.values()), counts=counts, seed_s=seeded)
    return out


# -- the docs screenshot ---------------------------------------------------------------------------------------------
WORKER = (
    "import os, random, sys, time\n"
    "kind = sys.argv[1]\n"
    "print('task', os.environ['HERMES_KANBAN_TASK'], 'run', os.environ['HERMES_KANBAN_RUN_ID'], flush=True)\n"
    "for step in range(3):\n"
    "    print(f'step {step}: processing batch {random.randint(100, 999)}', flush=True)\n"
    "    time.sleep(0.2)\n"
    "if kind == 'crash':\n"
    "    print('error: upstream returned 503', file=sys.stderr, flush=True)\n"
    "    sys.exit(3)\n"
    "time.sleep(60 if kind == 'slow' else 0)\n"
)


def seed_busy(rng: random.Random) -> None:
    """A few hundred tasks in every status, with real runs: a live dispatcher runs workers that finish, crash and
    retry, time out or keep running."""
    from hermes_cli.kanban import Board

    worker_py = Path(os.environ["HERMES_HOME"]) / "worker.py"
    worker_py.write_text(WORKER)

    def cmd(kind: str) -> str:
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(worker_py))} {kind}"

    with Board.open() as b:
        def title() -> str:
            return f"{rng.choice(WORDS)} the {rng.choice(WORDS)} for {rng.choice(('ops', 'q3', 'eu-west', 'beta'))}"

        def make(n: int, **kw: Any) -> list[str]:
            return [b.create_task(title(), priority=rng.randint(0, 9), tenant=rng.choice((None, "ops", "research")),
                                  **kw)[0].id for _ in range(n)]

        for tid in make(220):
            claim = b.claim(tid, worker="nightly")
            assert claim is not None
            b.complete(tid, claim.run_id, summary=rng.choice(("merged", "report sent", "42 rows fixed", "ok")))
        for tid in make(12):
            b.block(tid, reason=rng.choice(("needs credentials", "waiting on design", "flaky upstream")))
        for tid in make(10, review=True):
            claim = b.claim(tid, worker="nightly")
            assert claim is not None
            b.complete(tid, claim.run_id, summary="ready for review")
        for tid in make(15):
            b.archive(tid)
        parents = make(6, command=cmd("slow"))
        for p in parents:
            for _ in range(3):
                b.create_task(title(), parents=[p], priority=rng.randint(0, 5))
        make(8, command=cmd("crash"), max_retries=1)
        make(6, command=cmd("ok"))
        make(60, command=cmd("slow"))


async def _screenshot(svg: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from hermes_cli.kanban import Board
    from tui.app import KanbanApp

    app = KanbanApp()
    async with app.run_test(size=(200, 54), notifications=True) as pilot:
        await _until(pilot, lambda: app.board_ready and app._watch_reader is not None)
        await _until(pilot, lambda: app.query_one("StatusLine").health is not None)
        ready = app.column("ready")
        ready.focus()
        await pilot.press("down", "down")
        await pilot.pause(0.3)
        with Board.open() as b:  # another "process" finishing a task while the TUI watches
            target = b.list_tasks(status="ready", limit=1)[0]
            b.complete(target.id, summary="all 1,204 invoices reconciled")
        running = app.column("running")
        running.focus()
        await _until(pilot, lambda: running.highlighted_task is not None)
        await pilot.press("enter")
        await _until(pilot, lambda: app.query_one("DetailPane").task_id is not None)
        await pilot.pause(0.8)
        app.save_screenshot(svg.name, str(svg.parent))


def screenshot(svg: Path, png_width: int) -> None:
    rng = random.Random(11)
    seed_busy(rng)
    dispatcher = subprocess.Popen([sys.executable, "-m", "hermes_cli.main", "kanban", "daemon", "--max-spawn", "6",
                                   "--quiet"], env=dict(os.environ), stdout=subprocess.DEVNULL)
    try:
        time.sleep(6)  # workers start, finish, crash and retry
        asyncio.run(_screenshot(svg))
    finally:
        dispatcher.terminate()
        dispatcher.wait(60)
    png = svg.with_suffix(".png")
    converter = shutil.which("rsvg-convert")
    if converter is None:
        print(f"wrote {svg}; install librsvg2-bin (rsvg-convert) to also write {png}")
        return
    subprocess.run([converter, "-w", str(png_width), "-o", str(png), str(svg)], check=True)
    print(f"wrote {svg} and {png}")


def _env() -> dict[str, Any]:
    import apsw

    return {"python": platform.python_version(), "sqlite": apsw.sqlite_lib_version(), "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100_000, help="tasks on the seeded board (default 100000)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--screenshot", type=Path, metavar="SVG", help="make the docs screenshot instead of measuring")
    ap.add_argument("--png-width", type=int, default=1800)
    ap.add_argument("--role", choices=["measure"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "measure":
        return role_measure()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="hermes-tui-bench-") as home:
        os.environ["HERMES_HOME"] = home
        if args.screenshot is not None:
            return screenshot(args.screenshot.resolve(), args.png_width)
        env = _env()
        result = measure(args.tasks)
        env["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    result["env"] = env
    if args.json:
        print(json.dumps(result, indent=2))
        return
    r = result
    print(f"hermes kanban TUI bench: {r['tasks']:,} tasks (seeded in {r['seed_s']:.1f} s), "
          f"terminal {SIZE[0]}x{SIZE[1]}")
    print("  " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print("  " + "  ".join(f"{s} {n:,}" for s, n in r["counts"].items()))
    print(f"  open (process start -> board painted)   {r['open_s']:.2f} s   (imports {r['imports_s']:.2f} s)")
    print(f"  resident memory                         {r['rss_mb']:.0f} MB   (peak {r['peak_rss_mb']:.0f} MB)")
    print(f"  End in '{r['biggest_column']}' ({r['biggest_count']:,} cards) {r['end_ms']:>9.1f} ms")
    print(f"  jump to the middle of it                {r['jump_middle_ms']:>9.1f} ms")
    print(f"  ten PageDowns                           {r['ten_pagedowns_ms']:>9.1f} ms")
    print(f"  filter 'deploy' ({r['filtered_total']:,} matches)   {r['filter_ms']:>9.1f} ms")
    print(f"  event storm: {r['storm_events']:,} events from another process in {r['storm_s']:.1f} s; event-loop lag "
          f"p50 {r['storm_lag_p50_ms']:.1f} ms, p99 {r['storm_lag_p99_ms']:.1f} ms, max {r['storm_lag_max_ms']:.1f} ms")


if __name__ == "__main__":
    main()
