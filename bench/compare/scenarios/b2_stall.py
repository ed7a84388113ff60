"""B2 stall: K workers (A) each claim a task and are SIGSTOPped past the lease; K more (B) try to take the tasks
over; then the A workers are SIGCONTed and try to complete. Counts takeovers, their delay, and whether a stale
owner's completion was accepted (it must not be, once another worker took the task over)."""

from __future__ import annotations

import json
import signal
import threading
import time

from harness.config import log
from harness.procs import wait_ready
from harness.stats import med
from harness.table import fmt, table


def _pause_holders(bench, name, cell, a_procs) -> tuple[dict, str | None]:
    """Start the A workers one by one, SIGSTOP each right after its claim; ({task: (proc, t_stop)}, error)."""
    held: dict = {}  # tid -> (A proc, t_stop)
    for i in range(bench.cfg["stall_k"]):
        a = bench.spawn(name, "stall", cell, f"a{i}", stdin=False, lease=bench.cfg["lease"], hold=1.0, claim_timeout=20)
        a_procs.append(a)
        if err := wait_ready([a], 180):
            return held, err
        t, line = a.next_line(30)
        if not line or not line.startswith("S "):
            return held, f"A{i} did not claim: {line} {a.stderr_tail()}"
        a.kill(signal.SIGSTOP)
        held[line.split()[1]] = (a, time.time())
    return held, None


def _start_takers(bench, name, cell, b_procs) -> str | None:
    """The B workers: heartbeat 4x per lease, wait up to lease + 6 s for a task to claim."""
    lease = bench.cfg["lease"]
    for i in range(bench.cfg["stall_k"]):
        b = bench.spawn(
            name,
            "stall",
            cell,
            f"b{i}",
            stdin=False,
            lease=lease,
            hold=2.0,
            heartbeat_every=lease / 4,
            claim_timeout=lease + 6,
        )
        b_procs.append(b)
    return wait_ready(b_procs, 180)


def _takeovers(b_procs, held, lease, t_stopped) -> tuple[dict, int]:
    """{task: seconds from its holder's SIGSTOP to a B worker's claim}, and how many B workers claimed nothing."""
    takeovers = {}
    no_claim = 0
    for b in b_procs:
        t, line = b.next_line(lease + 30)
        if line and line.startswith("S "):
            tid = line.split()[1]
            takeovers[tid] = t - held.get(tid, (None, t_stopped))[1]
        else:
            no_claim += 1
    return takeovers, no_claim


def _outcome(held, b_procs, takeovers, no_claim) -> dict:
    """SIGCONT the A workers and read who of A and B had their completion accepted."""
    for a, _ in held.values():
        a.kill(signal.SIGCONT)
    a_acc = {}
    for tid, (a, _) in held.items():
        t, line = a.next_line(30)
        a_acc[tid] = int(line.split()[3]) if line and line.startswith("F ") else None
    b_acc = {}
    for b in b_procs:
        t, line = b.next_line(30)
        if line and line.startswith("F "):
            b_acc[line.split()[1]] = int(line.split()[3])
    return {
        "takeovers": len(takeovers),
        "no_claim": no_claim,
        "takeover_p50_s": med(list(takeovers.values())),
        "stale_attempts": sum(1 for tid in takeovers if a_acc.get(tid) is not None),
        "stale_accepted": sum(1 for tid in takeovers if a_acc.get(tid) == 1),
        "paused_completed_without_takeover": sum(1 for tid, acc in a_acc.items() if tid not in takeovers and acc == 1),
        "new_owner_accepted": sum(b_acc.values()),
        "both_accepted": sum(1 for tid in takeovers if a_acc.get(tid) == 1 and b_acc.get(tid) == 1),
    }


def once(bench, name):
    """One stall run of one system on a fresh board of stall_k tasks."""
    K = bench.cfg["stall_k"]
    cell, ids = bench.fresh_board(name, K, "stall")
    stop = cell / "stop"
    monitor = bench.start_monitor(name, cell, bench.cfg["lease"], cell / "status.json", stop)
    a_procs, b_procs = [], []
    res = {"k": K}
    try:
        if err := wait_ready([monitor], 180):
            return {"error": err}
        held, err = _pause_holders(bench, name, cell, a_procs)
        if err:
            return {"error": err}
        t_stopped = time.time()
        if err := _start_takers(bench, name, cell, b_procs):
            return {"error": err}
        takeovers, no_claim = _takeovers(b_procs, held, bench.cfg["lease"], t_stopped)
        res.update(_outcome(held, b_procs, takeovers, no_claim))
    finally:
        stop.touch()
        for pr in a_procs:
            pr.kill(signal.SIGCONT)
        for pr in a_procs + b_procs + [monitor]:
            pr.wait(15)
            pr.close()
    v = bench.verify(name, cell)
    res["verify"] = v
    res["integrity"] = v["integrity"]
    bench.done_with(cell)
    return res


def run(bench):
    """Every system's stall run side by side (one thread each)."""
    rows = {}
    log(
        f"B2 stall: {bench.cfg['stall_k']} workers SIGSTOPped right after claiming, lease {bench.cfg['lease']}s; "
        "systems side by side"
    )

    def one(name):
        try:
            r = once(bench, name)
        except Exception as exc:  # noqa: BLE001
            r = {"error": f"{type(exc).__name__}: {exc}"}
        r["system"] = name
        rows[name] = r
        log(f"stall {name}: " + json.dumps({k: v for k, v in r.items() if k not in ("verify",)}))

    threads = [threading.Thread(target=one, args=(n,)) for n in bench.avail()]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    bench.results["stall"] = [rows[n] for n in bench.avail()]


HEADERS = ["system", "takeovers", "takeover s", "stale accepted", "new owner accepted", "both accepted", "integrity"]


def _render_row(r) -> list:
    if "error" in r:
        return [r["system"], "ERROR", "", "", "", "", r["error"][:200]]
    stale = f"{r['stale_accepted']}/{r['stale_attempts']}" if r["takeovers"] else "n/a (no takeover)"
    return [
        r["system"],
        f"{r['takeovers']}/{r['k']}",
        fmt(r["takeover_p50_s"], 2),
        stale,
        f"{r['new_owner_accepted']}",
        r["both_accepted"],
        r["integrity"],
    ]


def render(res: dict) -> list[str]:
    if not res.get("stall"):
        return []
    title = (
        "\nB2 stall: a worker SIGSTOPped while holding a task past the lease, another worker takes it "
        "over, the paused one is SIGCONTed and completes"
    )
    return [title, table(HEADERS, [_render_row(r) for r in res["stall"]])]
