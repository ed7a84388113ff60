"""Physical limit: fsyncs + fdatasyncs per task of one FULL-mode worker (counted with strace -c: a run of
strace_tasks tasks minus a run of none), multiplied by B1's tasks/s and set against the fsync probe's ceiling.
Uses the results of the fsync probe, B1 and `next`; without strace the sync columns are n/a."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

from harness.config import WORKER, log
from harness.procs import child_env
from harness.table import fmt, table


def strace_syncs(bench, name, n_tasks, use_next=False):
    """fsync+fdatasync calls made by one FULL-mode worker doing n_tasks claim->complete (via strace -c)."""
    cell, _ = bench.fresh_board(name, bench.cfg["b1_board"], f"strace{'next' if use_next else ''}-{n_tasks}")
    out = cell / "strace.txt"
    args = [
        "strace",
        "-f",
        "-c",
        "-o",
        str(out),
        "-e",
        "trace=fsync,fdatasync",
        str(bench.py[name]),
        str(WORKER),
        "burn",
        "--adapter",
        name,
        "--dir",
        str(cell / "board"),
        "--durability",
        "full",
        "--lease",
        "60",
        "--out",
        str(cell / "w.json"),
        "--stop-on-empty",
        "--max-tasks",
        str(n_tasks),
    ] + (["--next"] if use_next else [])
    with open(cell / "strace.stderr", "wb") as err:
        p = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=child_env()
        )
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.kill()
            p.wait()
            raise RuntimeError(f"strace worker not ready: {(cell / 'strace.stderr').read_text()[-300:]}")
        t = time.time()
        p.stdin.write(f"go {t} {t + 600}\n")
        p.stdin.flush()
        p.wait(600)
    done = len(json.loads((cell / "w.json").read_text())["completed"])
    calls = 0
    for line in out.read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync"):
            calls += int(parts[3])
    bench.done_with(cell)
    return calls, done


def _count_syncs(bench, name, row):
    """syncs_per_task (and the baseline of a worker that completes nothing) of the plain loop, into row."""
    try:
        c0, d0 = strace_syncs(bench, name, 0)
        c1, d1 = strace_syncs(bench, name, bench.cfg["strace_tasks"])
        row["syncs_per_task"] = (c1 - c0) / d1 if d1 else None
        row["syncs_baseline"] = c0
    except Exception as exc:  # noqa: BLE001
        row["syncs_per_task"] = None
        row["strace_error"] = str(exc)[:300]


def _next_figures(bench, name, row, nxt, fs):
    """The `next` loop at W=1: syncs/task, tasks/s, and its fraction of the ceiling, into row."""
    try:
        n0, e0 = strace_syncs(bench, name, 0, use_next=True)
        n1, e1 = strace_syncs(bench, name, bench.cfg["strace_tasks"], use_next=True)
        row["syncs_per_task_next"] = (n1 - n0) / e1 if e1 else None
    except Exception as exc:  # noqa: BLE001
        row["strace_error_next"] = str(exc)[:300]
    row["tasks_per_s_w1_next"] = nxt["tasks_per_s"]
    spn = row.get("syncs_per_task_next")
    if fs and spn is not None:
        row["syncs_per_s_w1_next"] = nxt["tasks_per_s"] * spn
        row["fraction_w1_next"] = nxt["tasks_per_s"] * spn / fs["ceiling_per_s"]


def _row(bench, name, have_strace) -> dict:
    res = bench.results
    fs = res.get("fsync")
    row: dict = {"system": name}
    if have_strace:
        _count_syncs(bench, name, row)
    else:
        row["strace_error"] = "n/a: strace not installed"
    full = [r for r in res.get("b1", []) if r["system"] == name and r["durability"] == "full"]
    one = next((r for r in full if r["workers"] == 1), {})
    best = max((r for r in full if r.get("tasks_per_s")), key=lambda r: r["tasks_per_s"], default={})
    row["tasks_per_s_w1"] = one.get("tasks_per_s")
    nxt = next((r for r in res.get("b1_next", []) if r["system"] == name and r["workers"] == 1), None)
    if nxt and nxt.get("tasks_per_s") and have_strace:
        _next_figures(bench, name, row, nxt, fs)
    row["tasks_per_s_best"] = best.get("tasks_per_s")
    row["best_workers"] = best.get("workers")
    spt = row.get("syncs_per_task")
    if fs and spt is not None:
        for tag in ("w1", "best"):
            rate = row[f"tasks_per_s_{tag}"]
            if rate:
                row[f"syncs_per_s_{tag}"] = rate * spt
                row[f"fraction_{tag}"] = rate * spt / fs["ceiling_per_s"]
    return row


def run(bench):
    rows = []
    have_strace = shutil.which("strace") is not None
    for name in bench.avail():
        if bench.durability_na(name, "full"):
            rows.append({"system": name, "na": bench.durability_na(name, "full")})
            continue
        row = _row(bench, name, have_strace)
        rows.append(row)
        log(f"physical {name}: " + json.dumps({k: v for k, v in row.items() if k != "system"}))
    bench.results["physical"] = rows


HEADERS = ["system", "syncs/task", "tasks/s W=1", "syncs/s W=1", "fraction W=1", "tasks/s best", "fraction best"]


def _render_row(r) -> list:
    if "na" in r:
        return [r["system"], "n/a"] + [""] * 4 + [r["na"]]
    return [
        r["system"],
        fmt(r.get("syncs_per_task"), 2) if r.get("syncs_per_task") is not None else r.get("strace_error", "-")[:40],
        fmt(r.get("tasks_per_s_w1"), 0),
        fmt(r.get("syncs_per_s_w1"), 0),
        fmt(r.get("fraction_w1"), 3),
        f"{fmt(r.get('tasks_per_s_best'), 0)} (W={r.get('best_workers')})",
        fmt(r.get("fraction_best"), 3),
    ]


def _next_line(r) -> str | None:
    if r.get("fraction_w1_next") is not None:
        return (
            f"{r['system']} --next at W=1: {fmt(r['tasks_per_s_w1_next'], 0)} tasks/s x "
            f"{fmt(r['syncs_per_task_next'], 2)} syncs/task = {fmt(r['syncs_per_s_w1_next'], 0)} syncs/s = "
            f"{fmt(r['fraction_w1_next'], 3)} of the fsync ceiling (issue 12 target: >= 0.6)"
        )
    if r.get("strace_error_next"):
        return f"{r['system']} --next: syncs not counted ({r['strace_error_next'][:120]})"
    return None


def render(res: dict) -> list[str]:
    if not res.get("physical"):
        return []
    f = res.get("fsync") or {}
    out = [
        f"\nPhysical limit: ceiling 1/fsync = {fmt(f.get('ceiling_per_s'), 0)} syncs/s; syncs/task counted "
        "with strace (fsync+fdatasync, FULL, 1 worker); fraction = tasks/s x syncs/task / ceiling "
        "(W > 1 can exceed 1: fsyncs from several processes overlap)",
        table(HEADERS, [_render_row(r) for r in res["physical"]]),
    ]
    return out + [line for line in map(_next_line, res["physical"]) if line]
