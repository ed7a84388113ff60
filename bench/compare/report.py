"""The text report of a run: a header (date, host, notes, systems), each scenario's own table in run order, the B1
FULL ratio table (ours over each peer) after the B1 tables, and the wall time."""

from __future__ import annotations

from harness.table import fmt, table
from scenarios import b1, b1_next, b2_chaos, b2_stall, b3, floor, fsync, physical


def render_ratios(res: dict, ours: str = "hermes-kanban", peers: tuple[str, ...] = ("huey", "persist-queue")) -> str:
    """B1 at FULL: our tasks/s over each peer's, per worker count (>= 1.00 means we are at least as fast), for the
    plain claim -> complete loop and for --next; and our own fall-off from 1 worker."""
    full = {
        (r["system"], r["workers"]): r.get("tasks_per_s") for r in res.get("b1", []) if r.get("durability") == "full"
    }
    nxt = {r["workers"]: r.get("tasks_per_s") for r in res.get("b1_next", []) if r["system"] == ours}
    workers = sorted({w for (n, w) in full if n == ours} | set(nxt))
    present = [p for p in peers if any(n == p for n, _ in full)]
    if not workers or not (present or nxt):
        return ""

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "-"

    headers = ["W", ours]
    headers += [f"/{p}" for p in present]
    headers += ["vs W=1"]
    if nxt:
        headers += [f"{ours} --next"] + [f"--next/{p}" for p in present] + ["--next vs W=1"]
    rows = []
    for w in workers:
        mine = full.get((ours, w))
        row = [w, fmt(mine, 0)] + [ratio(mine, full.get((p, w))) for p in present]
        base = full.get((ours, workers[0]))
        row.append(f"{mine / base - 1:+.0%}" if mine and base else "-")
        if nxt:
            n = nxt.get(w)
            row += [fmt(n, 0)] + [ratio(n, full.get((p, w))) for p in present]
            nb = nxt.get(workers[0])
            row.append(f"{n / nb - 1:+.0%}" if n and nb else "-")
        rows.append(row)
    return "\nB1 FULL ratios (ours / peer tasks/s; >= 1.00 = at least as fast)\n" + table(headers, rows)


def _header(res: dict) -> list[str]:
    meta = res["meta"]
    out = [
        f"hermes kanban peer comparison — {meta['date']} — {meta['host']}, {meta['cpus']} cpus, "
        f"python {meta['python']}, profile {meta['profile']}"
    ]
    out += [f"NOTE: {note}" for note in res["notes"]]
    out.append("systems: " + ", ".join(f"{n} {i['version']} (sqlite {i['sqlite']})" for n, i in res["systems"].items()))
    out += [f"  {n}: {why}" for n, why in res.get("unavailable", {}).items()]
    return out


def render(res: dict) -> str:
    out = _header(res)
    out += fsync.render(res)
    out += b1.render(res)
    out += b1_next.render(res)
    ratio_text = render_ratios(res)
    if ratio_text:
        out.append(ratio_text)
    for scenario in (b2_chaos, b2_stall, b3, physical, floor):
        out += scenario.render(res)
    m = res["meta"]
    out.append(
        f"\nwall time: {m['wall_s']:.0f} s total = venv setup {m['setup_s']:.0f} s + template seeding "
        f"{m['seeding_s'] or 0:.0f} s + measurements {m['measure_s']:.0f} s"
    )
    return "\n".join(out)
