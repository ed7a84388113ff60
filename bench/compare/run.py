#!/usr/bin/env python3
"""Peer-comparison benchmark: hermes kanban vs hermes-agent's kanban_db, huey, litequeue and persist-queue.

    python bench/compare/run.py [--quick] [--out results.json]

Standard library only. Every system is installed from PyPI (hermes kanban from this checkout) into its own
virtualenv under bench/.venvs/<name> (reused when present), and every measured operation runs in real worker
processes started with that venv's python (bench/compare/worker.py + bench/compare/adapters/<name>.py).
Scenarios (see bench/compare/README.md): fsync probe, B1 burn-down, B2 chaos (SIGKILL) + stall (SIGSTOP/SIGCONT),
B3 observer contention, physical limit, floor. Progress goes to stderr; the tables to stdout; everything to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from harness.bench import Bench
from harness.config import BENCH, ORDER, SYSTEMS, log
from report import render
from scenarios import b1, b2_chaos, b2_stall, b3, floor, fsync, physical

# Layout: harness/ (config and profiles, venvs, worker processes, the run's boards, stats, tables), scenarios/ (one
# module per scenario: its measurement, its rows in the results and its table), report.py (assembles the tables).
SCENARIOS = ("fsync", "b1", "next", "b2", "stall", "b3", "physical", "floor")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small boards, 1 repeat: a smoke test, not for publication")
    p.add_argument("--out", default=None, help="write all results as JSON here (default bench/results/<ts>.json)")
    p.add_argument("--systems", default=",".join(ORDER), help="comma list, default all: " + ",".join(ORDER))
    p.add_argument(
        "--scenarios",
        default="fsync,b1,next,b2,stall,b3,physical,floor",
        help="comma list of fsync,b1,next,b2,stall,b3,physical,floor (physical uses b1's numbers; next = B1 at FULL "
        "with complete-and-claim in one transaction, for the systems that have it; floor = bench/floor.py, the "
        "cheapest SQLite commit and hermes kanban's write set without its domain layer, set against the peers' B1)",
    )
    p.add_argument("--repeats", type=int, help="B1 runs per cell (median reported)")
    p.add_argument("--b1-board", type=int, help="B1 board size")
    p.add_argument("--b1-window", type=float, help="B1 seconds per run; 0 = drain the whole board")
    p.add_argument("--b2-repeats", type=int)
    p.add_argument("--b3-repeats", type=int)
    p.add_argument("--b3-sizes", help="comma list of B3 board sizes")
    p.add_argument("--venv-dir", default=str(BENCH / ".venvs"))
    p.add_argument(
        "--cache-dir",
        default=str(BENCH / ".cache"),
        help="seeded template boards and the scratch boards of the run (same disk is measured)",
    )
    p.add_argument("--keep", action="store_true", help="keep every scratch board and log")
    args = p.parse_args()

    bad = [s for s in args.scenarios.split(",") if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {', '.join(bad)}; known: {', '.join(SCENARIOS)}")
    unknown = [s for s in args.systems.split(",") if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    return args


def seed_templates(bench: Bench, scenarios: list[str]) -> None:
    """Seed all templates first, so seeding is not inside any measurement."""
    for name in bench.avail():
        sizes = set()
        if "b1" in scenarios or "next" in scenarios or "physical" in scenarios:
            sizes.add(bench.cfg["b1_board"])
        if "b2" in scenarios:
            sizes.add(bench.cfg["b2_tasks"])
        if "b3" in scenarios and not bench.info[name].get("summary"):
            sizes.update(bench.cfg["b3_sizes"])
        for n in sorted(sizes):
            bench.template(name, n)


def run_scenarios(bench: Bench, scenarios: list[str]) -> None:
    """In a fixed order whatever the command line's: the fsync probe at the start, after B1 and at the end (the
    physical limit needs it), physical and floor last (they use B1's and next's figures)."""
    probe = "fsync" in scenarios or "physical" in scenarios
    if probe:
        fsync.probe(bench, "start")
    if "b1" in scenarios or "next" in scenarios:
        b1.run(bench, with_b1="b1" in scenarios, with_next="next" in scenarios)
        if probe:
            fsync.probe(bench, "after B1")
    if "b2" in scenarios:
        b2_chaos.run(bench)
    if "stall" in scenarios:
        b2_stall.run(bench)
    if "b3" in scenarios:
        b3.run(bench)
    if probe:
        fsync.probe(bench, "end")
    if "physical" in scenarios:
        physical.run(bench)
    if "floor" in scenarios:
        floor.run(bench)


def add_notes(res: dict, args: argparse.Namespace, cfg: dict, load_start: tuple, wall: float) -> None:
    """The caveats printed above the tables: diagnostic or quick runs, B1's scaling, a busy machine, over budget."""
    if os.environ.get("BENCH_HERMES_AGENT_NO_LENGTH_PROBE") == "1":
        res["notes"].append(
            "DIAGNOSTIC RUN: hermes-agent's post-commit file-length probe was disabled "
            "(BENCH_HERMES_AGENT_NO_LENGTH_PROBE=1); its figures are NOT the shipped 0.19.0 behaviour"
        )
    if args.quick:
        res["notes"].append("QUICK MODE: small boards and 1 repeat — a smoke test of the harness, not a result")
    if cfg["b1_window"] and cfg["b1_board"] > 0:
        res["notes"].append(
            f"B1 is scaled to fit the 10-minute budget: each run measures a {cfg['b1_window']} s "
            f"window on a {cfg['b1_board']}-task board instead of draining it "
            "(use --b1-window 0 to drain)"
        )
    if load_start[0] > 0.5:
        res["notes"].append(
            f"the machine was busy when the run started (load average {load_start[0]:.2f}): "
            "other processes compete for the 2 cores and the disk; compare runs with care"
        )
    if wall > 600:
        res["notes"].append(f"over budget: the run took {wall:.0f} s (> 600 s)")


def main():
    args = parse_args()
    bench = Bench(args)
    scenarios = args.scenarios.split(",")
    load_start = os.getloadavg()
    t_setup = time.time()
    bench.setup()
    t0 = time.time()
    res = bench.results
    try:
        seed_templates(bench, scenarios)
        res["seed_seconds"] = round(time.time() - t0, 1)
        run_scenarios(bench, scenarios)
    finally:
        bench.close()
    t_done = time.time()
    wall = t_done - t_setup
    add_notes(res, args, bench.cfg, load_start, wall)
    res["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "profile": "quick" if args.quick else "full",
        "wall_s": wall,
        "setup_s": t0 - t_setup,
        "seeding_s": res.get("seed_seconds"),
        "measure_s": t_done - t0 - (res.get("seed_seconds") or 0),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }
    res["config"] = bench.cfg
    res["systems"] = bench.info
    res["unavailable"] = bench.unavailable
    text = render(res)
    res["table"] = text
    out = Path(args.out) if args.out else BENCH / "results" / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    print(text)
    log(f"results written to {out}")


if __name__ == "__main__":
    main()
