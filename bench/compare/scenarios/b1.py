"""B1 burn-down: W worker processes claim -> complete no-op tasks on a seeded board for a time window (or until it
is drained), at durability FULL and NORMAL; tasks/s, claim and complete latency, and an exactly-once check of what
the workers completed against the seeded ids and the system's own counts. The `next` scenario (b1_next.py) runs in
the same loop, its cells interleaved with these."""

from __future__ import annotations

import json
import time

from harness.config import DURABILITIES, log
from harness.procs import wait_ready
from harness.stats import med, ms, pct
from harness.table import fmt, table

from scenarios import b1_next


def _start_workers(bench, name, cell, durability, workers, use_next):
    return [
        bench.spawn(
            name,
            "burn",
            cell,
            f"w{k}",
            durability=durability,
            lease=60,
            out=cell / f"w{k}.json",
            stop_on_empty=True,
            next=use_next,
        )
        for k in range(workers)
    ]


def _burn(procs, cell, window) -> tuple[list | None, float, str | None]:
    """Start every ready worker at the same instant, wait for them; (their result files, t_go, error)."""
    err = wait_ready(procs, 180)
    if err:
        return None, 0.0, err
    window = window or 86_400.0
    t_go = time.time() + 0.2
    for pr in procs:
        pr.send(f"go {t_go} {t_go + window}")
    for pr in procs:
        pr.wait(window + 300)
    outs = []
    for k, pr in enumerate(procs):
        f = cell / f"w{k}.json"
        if not f.exists():
            return None, t_go, f"worker {k} exited {pr.p.returncode} without results: {pr.stderr_tail()}"
        outs.append(json.loads(f.read_text()))
    return outs, t_go, None


def _result(outs, ids, t_go, v) -> dict:
    completed = [t for o in outs for t in o["completed"]]
    uniq = set(completed)
    elapsed = max(o["t_last"] for o in outs) - t_go
    claim = [x for o in outs for x in o["claim_lat"]]
    comp = [x for o in outs for x in o["complete_lat"]]
    return {
        "completed": len(completed),
        "elapsed_s": elapsed,
        "tasks_per_s": len(completed) / elapsed if elapsed > 0 else None,
        "claim_p50_ms": ms(pct(claim, 50)),
        "claim_p99_ms": ms(pct(claim, 99)),
        "complete_p50_ms": ms(pct(comp, 50)),
        "complete_p99_ms": ms(pct(comp, 99)),
        "busy": sum(o["busy"] for o in outs),
        "errors": sum(o["errors"] for o in outs),
        "error_samples": [e for o in outs for e in o["error_samples"]][:5],
        "conflicts": sum(o.get("conflicts", 0) for o in outs),
        "rejected": sum(o["rejected"] for o in outs),
        "duplicates": len(completed) - len(uniq),
        "unknown_ids": len(uniq - set(ids)),
        "verify": v,
    }


def _problems(res, outs, ids, v) -> list[str]:
    """What breaks exactly-once: duplicates, unknown ids, counts that do not add up, integrity, errors, give-ups
    (the give-ups are also stored in res["fatal"])."""
    uniq = {t for o in outs for t in o["completed"]}
    problems = []
    if res["duplicates"]:
        problems.append(f"{res['duplicates']} completed twice")
    if res["unknown_ids"]:
        problems.append(f"{res['unknown_ids']} unknown ids")
    if v["done"] is None:
        problems.append("board could not be counted")
    else:
        if v["done"] != len(uniq):
            problems.append(f"system says done={v['done']} but workers completed {len(uniq)}")
        if v["done"] + v["open"] + (v["inflight"] or 0) != len(ids):
            problems.append(f"{len(ids) - v['done'] - v['open'] - (v['inflight'] or 0)} tasks missing")
        # next scenario: each worker may stop holding the claim its last complete made (never handed out)
        pending = sum(o.get("pending", 0) for o in outs)
        if (v["inflight"] or 0) != pending:
            problems.append(f"{(v['inflight'] or 0) - pending} left in flight")
    if v["integrity"] != "ok":
        problems.append(f"integrity: {v['integrity'][:80]}")
    if res["errors"]:
        problems.append(f"{res['errors']} errors")
    fatal = [o["fatal"] for o in outs if o.get("fatal")]
    if fatal:
        res["fatal"] = fatal
        problems.append(f"{len(fatal)} worker(s) gave up: {fatal[0][:120]}")
    return problems


def run_cell(bench, name, durability, workers, rep, use_next=False):
    """One run of one cell (system x durability x worker count) on a fresh copy of the seeded board."""
    cfg = bench.cfg
    tag = f"b1{'next' if use_next else ''}-{durability}-w{workers}-r{rep}"
    cell, ids = bench.fresh_board(name, cfg["b1_board"], tag)
    procs = _start_workers(bench, name, cell, durability, workers, use_next)
    try:
        outs, t_go, err = _burn(procs, cell, cfg["b1_window"])
        if err:
            return {"error": err}
    finally:
        for pr in procs:
            pr.close()
    v = bench.verify(name, cell)
    res = _result(outs, ids, t_go, v)
    problems = _problems(res, outs, ids, v)
    res["correct"] = not problems
    res["problems"] = problems
    bench.done_with(cell, keep=v["integrity"] != "ok")
    return res


def _plan(bench, cells, next_cells):
    """(durability, workers, system, use_next) in run order: each `next` cell right after the same worker count's
    plain cells."""
    plan = [(d, w, name, False) for d, w in cells for name in bench.avail()]
    for d, w in next_cells:
        at = max((i + 1 for i, p in enumerate(plan) if p[0] == d and p[1] == w), default=len(plan))
        plan[at:at] = [(d, w, name, True) for name in b1_next.systems(bench)]
    return plan


def _log_cell(r, label, durability, w, rep):
    if "error" in r:
        log(f"B1 {label} {durability} w={w} r{rep}: ERROR {r['error'][:300]}")
    else:
        log(
            f"B1 {label} {durability} w={w} r{rep}: {r['tasks_per_s']:.0f} tasks/s "
            f"({r['completed']} in {r['elapsed_s']:.2f}s) busy={r['busy']} "
            f"{'ok' if r['correct'] else 'PROBLEMS: ' + '; '.join(r['problems'])[:300]}"
        )


def run(bench, with_b1=True, with_next=False):
    """Repeats are interleaved (repeat -> cell -> system) so that a noisy stretch of time hits every system.
    `with_next`: the `next` scenario, B1 at FULL with complete-and-claim in one transaction, interleaved with
    the same cells (durability "full", mode "next")."""
    cfg = bench.cfg
    cells = [(d, w) for d in DURABILITIES for w in cfg["b1_workers"]] if with_b1 else []
    next_cells = b1_next.cells(cfg) if with_next else []
    runs: dict[tuple, list] = {}
    for rep in range(cfg["repeats"]):
        log(f"B1 repeat {rep + 1}/{cfg['repeats']}")
        for durability, w, name, use_next in _plan(bench, cells, next_cells):
            if bench.durability_na(name, durability):
                continue
            r = run_cell(bench, name, durability, w, rep, use_next=use_next)
            runs.setdefault((name, "next" if use_next else durability, w), []).append(r)
            _log_cell(r, f"{name}{' --next' if use_next else ''}", durability, w, rep)
    if with_b1:
        bench.results["b1"] = rows(bench, runs, cells, bench.avail(), lambda d: d)
    if with_next:
        bench.results["b1_next"] = rows(bench, runs, next_cells, b1_next.systems(bench), lambda d: "next")


def _aggregate(row, cell_runs):
    """A cell's figures over its runs: medians of rates and latencies, sums of counts."""
    good = [r for r in cell_runs if "error" not in r]
    row["runs"] = cell_runs
    if not good:
        row["error"] = cell_runs[0]["error"]
        return
    for key in ("tasks_per_s", "claim_p50_ms", "claim_p99_ms", "complete_p50_ms", "complete_p99_ms"):
        row[key] = med([r[key] for r in good])
    for key in ("busy", "errors", "duplicates", "conflicts", "rejected", "completed"):
        row[key] = sum(r[key] for r in good)
    failing = [r for r in good if not r["correct"]]
    row["correct"] = not failing and len(good) == len(cell_runs)
    row["problems"] = [f"{len(failing)}/{len(cell_runs)} runs"] + failing[0]["problems"] if failing else []
    row["n_runs"] = len(good)


def rows(bench, runs, cells, names, run_key):
    """One row per system x cell (also used for b1_next, whose runs are keyed by mode "next")."""
    out = []
    for name in names:
        for durability, w in cells:
            row = {"system": name, "durability": durability, "workers": w}
            na = bench.durability_na(name, durability)
            if na:
                row["na"] = na
            else:
                _aggregate(row, runs[(name, run_key(durability), w)])
            out.append(row)
    return out


HEADERS = ["system", "sync", "W", "tasks/s", "claim p50", "claim p99", "compl p50", "compl p99", "busy", "exactly-once"]


def _render_row(r) -> list:
    if "na" in r:
        return [r["system"], r["durability"], r["workers"], "n/a", "", "", "", "", "", r["na"]]
    if "error" in r:
        return [r["system"], r["durability"], r["workers"], "ERROR", "", "", "", "", "", r["error"][:200]]
    return [
        r["system"],
        r["durability"],
        r["workers"],
        fmt(r["tasks_per_s"], 0),
        fmt(r["claim_p50_ms"], 2),
        fmt(r["claim_p99_ms"], 2),
        fmt(r["complete_p50_ms"], 2),
        fmt(r["complete_p99_ms"], 2),
        r["busy"],
        "ok" if r["correct"] else "FAIL: " + "; ".join(r["problems"])[:160],
    ]


def render(res: dict) -> list[str]:
    if not res.get("b1"):
        return []
    c = res["config"]
    title = (
        f"\nB1 burn-down: board of {c['b1_board']} no-op tasks, "
        + (f"{c['b1_window']} s window per run" if c["b1_window"] else "drained completely")
        + f", median of {c['repeats']} run(s); latency in ms; busy/dups summed over runs"
    )
    return [title, table(HEADERS, [_render_row(r) for r in res["b1"]])]
