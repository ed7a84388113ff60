"""B3 observer contention: on a board of N tasks, 2 workers burn, 1 writer adds a task every 200 ms and 1 observer
reads the board summary every 250 ms; the observer's and the writer's latency, busy errors, the workers' rate.
Systems without a board summary are reported n/a."""

from __future__ import annotations

import json
import time

from harness.config import log
from harness.procs import wait_ready
from harness.stats import med, ms, pct
from harness.table import fmt, table


def _measure(bench, name, cell, procs) -> tuple[tuple | None, dict | None]:
    """Start observer, writer and 2 burning workers (appended to procs), run them for b3_duration together;
    ((observer, writer, workers) result files, None) or (None, {"na"|"error": why})."""
    duration = bench.cfg["b3_duration"]
    obs = bench.spawn(name, "observer", cell, "observer", interval=0.25, out=cell / "observer.json")
    if err := wait_ready([obs], 180):
        obs.close()
        return None, {"na" if err.startswith("NOTSUPPORTED") else "error": err}
    procs.append(obs)
    wr = bench.spawn(name, "writer", cell, "writer", interval=0.2, out=cell / "writer.json")
    procs.append(wr)
    workers = [bench.spawn(name, "burn", cell, f"w{k}", lease=60, out=cell / f"w{k}.json") for k in range(2)]
    procs += workers
    if err := wait_ready(procs[1:], 300):
        return None, {"error": err}
    t_go = time.time() + 0.3
    for pr in procs:
        pr.send(f"go {t_go} {t_go + duration}")
    for pr in procs:
        pr.wait(duration + 120)
    o = json.loads((cell / "observer.json").read_text())
    w = json.loads((cell / "writer.json").read_text())
    ws = [json.loads((cell / f"w{k}.json").read_text()) for k in range(2)]
    return (o, w, ws), None


def run_cell(bench, name, size, rep):
    """One run on a fresh board of `size` tasks."""
    cell, ids = bench.fresh_board(name, size, f"b3-{size}-r{rep}")
    procs = []
    try:
        outs, failed = _measure(bench, name, cell, procs)
        if failed:
            return failed
    except (OSError, ValueError) as exc:
        return {"error": f"{exc}: " + " | ".join(p.stderr_tail(300) for p in procs)}
    finally:
        for pr in procs:
            pr.close()
    o, w, ws = outs
    v = bench.verify(name, cell)
    bench.done_with(cell, keep=v["integrity"] != "ok")
    return {
        "observer_p50_ms": ms(pct(o["lat"], 50)),
        "observer_p99_ms": ms(pct(o["lat"], 99)),
        "observer_max_ms": ms(max(o["lat"])) if o["lat"] else None,
        "observer_reads": len(o["lat"]),
        "writer_p50_ms": ms(pct(w["lat"], 50)),
        "writer_p99_ms": ms(pct(w["lat"], 99)),
        "writer_adds": len(w["lat"]),
        "busy_observer": o["busy"],
        "busy_writer": w["busy"],
        "busy_workers": sum(x["busy"] for x in ws),
        "errors": o["errors"] + w["errors"] + sum(x["errors"] for x in ws),
        "error_samples": (o["error_samples"] + w["error_samples"])[:5],
        "worker_tasks_per_s": sum(len(x["completed"]) for x in ws) / bench.cfg["b3_duration"],
        "fatal": [x["fatal"] for x in [o, w, *ws] if x.get("fatal")],
        "integrity": v["integrity"],
    }


def run(bench):
    """b3_repeats rounds over sizes and systems; a cell that was n/a or failed once is not run again."""
    cfg = bench.cfg
    runs: dict[tuple, list] = {}
    supported = [n for n in bench.avail() if not bench.info[n].get("summary")]
    for rep in range(cfg["b3_repeats"]):
        for size in cfg["b3_sizes"]:
            for name in supported:
                prev = runs.get((name, size), [])
                if prev and ("na" in prev[-1] or "error" in prev[-1]):
                    continue
                r = run_cell(bench, name, size, rep)
                runs.setdefault((name, size), []).append(r)
                shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "error_samples"}
                log(f"B3 {name} {size} r{rep}: " + json.dumps(shown)[:600])
    bench.results["b3"] = _rows(bench, runs)


MEDIANS = ("observer_p50_ms", "observer_p99_ms", "writer_p50_ms", "writer_p99_ms", "worker_tasks_per_s")
SUMS = ("busy_observer", "busy_writer", "busy_workers", "errors", "observer_reads", "writer_adds")


def _aggregate(row, cell_runs):
    row["runs"] = cell_runs
    good = [r for r in cell_runs if "na" not in r and "error" not in r]
    if not good:
        row.update({k: cell_runs[0][k] for k in ("na", "error") if k in cell_runs[0]})
        return
    for key in MEDIANS:
        row[key] = med([r[key] for r in good])
    row["observer_max_ms"] = max(r["observer_max_ms"] or 0 for r in good)
    for key in SUMS:
        row[key] = sum(r[key] for r in good)
    row["fatal"] = [f for r in good for f in r.get("fatal", [])]
    row["integrity"] = "ok" if all(r["integrity"] == "ok" for r in good) else "FAIL"
    row["n_runs"] = len(good)


def _rows(bench, runs):
    rows = []
    for name in bench.avail():
        for size in bench.cfg["b3_sizes"]:
            row = {"system": name, "size": size}
            na = bench.info[name].get("summary")
            if na:
                row["na"] = na
            else:
                _aggregate(row, runs.get((name, size), []))
            rows.append(row)
    return rows


HEADERS = [
    "system",
    "board",
    "obs p50",
    "obs p99",
    "write p50",
    "write p99",
    "reads/adds",
    "busy o/w/workers",
    "worker tasks/s",
    "integrity",
]


def _render_row(r) -> list:
    if "na" in r or "error" in r:
        label = "n/a" if "na" in r else "ERROR"
        return [r["system"], r["size"], label] + [""] * 6 + [r.get("na") or r["error"][:200]]
    return [
        r["system"],
        r["size"],
        fmt(r["observer_p50_ms"], 2),
        fmt(r["observer_p99_ms"], 2),
        fmt(r["writer_p50_ms"], 2),
        fmt(r["writer_p99_ms"], 2),
        f"{r['observer_reads']}/{r['writer_adds']}",
        f"{r['busy_observer']}/{r['busy_writer']}/{r['busy_workers']}",
        fmt(r["worker_tasks_per_s"], 0),
        r["integrity"],
    ]


def render(res: dict) -> list[str]:
    if not res.get("b3"):
        return []
    c = res["config"]
    title = (
        f"\nB3 observer contention: 2 workers burning, 1 writer adding 5 tasks/s, 1 observer reading the "
        f"board summary every 250 ms, {c['b3_duration']} s, median of {c['b3_repeats']} run(s); ms"
    )
    return [title, table(HEADERS, [_render_row(r) for r in res["b3"]])]
