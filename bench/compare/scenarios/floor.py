"""The floor under issue 12's targets, in the same run as the peers: bench/floor.py, run with hermes kanban's venv
python on the disk being measured. It times the cheapest durable SQLite commit (a one-row UPDATE, through APSW and
through the standard library's sqlite3) and hermes kanban's own write set for a task without the domain layer (the
store's statements, group-committed), and the render sets them against the peers' B1 tasks/s at FULL and 1 worker
from this run."""

from __future__ import annotations

import json
import subprocess

from harness.config import BENCH, log
from harness.procs import child_env
from harness.table import fmt, table

OURS = "hermes-kanban"
PEERS = ("huey", "persist-queue")


def run(bench) -> None:
    if OURS not in bench.avail():
        return
    quick = bench.cfg["b1_board"] < 10_000
    args = [str(bench.py[OURS]), str(BENCH / "floor.py"), "--json", "--dir", str(bench.work),
            "--tasks", "500" if quick else "2000", "--rounds", "1" if quick else "3"]
    log("floor: " + " ".join(args[1:]))
    out = subprocess.run(args, capture_output=True, text=True, env=child_env(), timeout=900)
    if out.returncode != 0:
        bench.results["floor"] = {"error": out.stderr.strip().splitlines()[-1][:300] if out.stderr else "failed"}
        return
    bench.results["floor"] = json.loads(out.stdout)
    log("floor: " + json.dumps({k: round(v["us_per_commit"]) for k, v in bench.results["floor"]["loops"].items()}))


def _peer_w1(res: dict) -> dict[str, float]:
    return {
        r["system"]: r["tasks_per_s"]
        for r in res.get("b1", [])
        if r.get("durability") == "full" and r["workers"] == 1 and r["system"] in PEERS and r.get("tasks_per_s")
    }


def render(res: dict) -> list[str]:
    floor = res.get("floor")
    if not floor:
        return []
    if "error" in floor:
        return [f"\nFloor (bench/floor.py): failed: {floor['error']}"]
    peers = _peer_w1(res)
    # the run's own ceiling (the median of its fsync probes), so that these fractions read like physical's
    ceiling = (res.get("fsync") or {}).get("ceiling_per_s") or floor["ceiling_per_s"]
    headers = ["loop (1 worker, FULL)", "tasks/s", "commits/s", "us/commit", "of ceiling"]
    headers += [f"tasks/s / {p} B1 W=1" for p in peers]
    rows = []
    for name, r in floor["loops"].items():
        rate = r.get("tasks_per_s")
        row = [name, fmt(rate, 0) if rate else "-", fmt(r["commits_per_s"], 0), fmt(r["us_per_commit"], 0),
               fmt(r["commits_per_s"] / ceiling, 3)]
        row += [f"{rate / peers[p]:.2f}" if rate else "-" for p in peers]
        rows.append(row)
    return [
        f"\nFloor (bench/floor.py, {floor['tasks']} tasks or commits per loop, median of {floor['rounds']}; of the "
        f"run's ceiling, {ceiling:.0f} commits/s). sqlite min = "
        "the cheapest durable SQLite commit (one-row UPDATE); store = hermes kanban's statements for a claim and a "
        "completion without the domain layer; lean = the same without runs_open, events_task and AUTOINCREMENT "
        "(a bound, not a shippable schema); board = the public API",
        table(headers, rows),
    ]
