"""The `next` scenario: B1 at FULL where each complete also claims the next task in the same transaction (one
commit per task; hermes kanban's `complete --next`), for the systems whose adapter has it. Its cells run inside
B1's loop (b1.run), right after the plain cells of the same worker count, on the same boards and windows."""

from __future__ import annotations

from harness.table import fmt, table


def systems(bench):
    """Systems that can complete and claim in one transaction (the `next` scenario)."""
    return [n for n in bench.avail() if bench.info[n].get("complete_next")]


def cells(cfg):
    """(durability, workers) of the `next` cells: FULL only, B1's worker counts."""
    return [("full", w) for w in cfg["b1_workers"]]


HEADERS = ["system", "W", "tasks/s", "compl+claim p50", "compl+claim p99", "busy", "exactly-once"]


def _render_row(r) -> list:
    if "error" in r:
        return [r["system"], r["workers"], "ERROR", "", "", "", r["error"][:200]]
    return [
        r["system"],
        r["workers"],
        fmt(r["tasks_per_s"], 0),
        fmt(r["complete_p50_ms"], 2),
        fmt(r["complete_p99_ms"], 2),
        r["busy"],
        "ok" if r["correct"] else "FAIL: " + "; ".join(r["problems"])[:160],
    ]


def render(res: dict) -> list[str]:
    if not res.get("b1_next"):
        return []
    title = (
        "\nB1 --next (complete and claim the next in ONE transaction: one commit per task), FULL, same boards "
        "and windows"
    )
    return [title, table(HEADERS, [_render_row(r) for r in res["b1_next"]])]
