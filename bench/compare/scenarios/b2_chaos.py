"""B2 chaos: W workers burn tasks that take b2_task_s each while one of them is SIGKILLed every b2_kill_every s and
respawned; a monitor process runs the system's time-based recovery, if it has one. From the workers' logs (S = a
task started, F = finished with accepted 0/1, X = busy/error counts): lost tasks, duplicate executions and
acceptances, and reclaim latency (kill -> the task it held is claimed again)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

from harness.config import log
from harness.procs import Proc, wait_ready
from harness.stats import med
from harness.table import fmt, table


def read_log(path: Path):
    """The S/F/H lines of a worker log, split into fields (an unreadable log has none)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("S", "F", "H"):
            out.append(parts)
    return out


def _idle(slot_log):
    """True when no live worker holds a task (every S in its log has its F)."""
    for lp in slot_log:
        open_tasks = set()
        for parts in read_log(lp):
            if parts[0] == "S":
                open_tasks.add(parts[1])
            elif parts[0] == "F":
                open_tasks.discard(parts[1])
        if open_tasks:
            return False
    return True


class _ChaosRun:
    """The W worker slots of one chaos run on one board: each worker that dies (our SIGKILL or its own crash) is
    replaced by a new incarnation with its own log."""

    def __init__(self, bench, name, cell: Path, stop: Path, status_file: Path):
        self.bench, self.name, self.cell, self.stop, self.status_file = bench, name, cell, stop, status_file
        self.cfg = bench.cfg
        self.W = self.cfg["b2_workers"]
        self.incarnation = [0] * self.W
        self.logs: list[Path] = []  # every incarnation's log, in start order
        self.slot_log: list[Path] = [None] * self.W
        self.kills: list[dict] = []
        self.crashed = 0
        self.crash_sample = None
        self.timed_out = False
        self.stuck = False
        self.slots: list[Proc] = [self.start(k) for k in range(self.W)]

    def start(self, k) -> Proc:
        self.incarnation[k] += 1
        lp = self.cell / f"w{k}.{self.incarnation[k]}.log"
        self.slot_log[k] = lp
        self.logs.append(lp)
        return self.bench.spawn(
            self.name,
            "chaos",
            self.cell,
            f"w{k}.{self.incarnation[k]}",
            stdin=False,
            lease=self.cfg["lease"],
            task_s=self.cfg["b2_task_s"],
            log=lp,
            stop_file=self.stop,
        )

    def respawn_crashed(self, now, respawn_at):
        for k in range(self.W):
            if self.slots[k].p.poll() is not None and now >= respawn_at[k]:
                # died on its own (not our SIGKILL): count it, respawn after a short pause
                self.crashed += 1
                self.crash_sample = self.crash_sample or self.slots[k].stderr_tail(400)
                self.slots[k].close()
                self.slots[k] = self.start(k)
                respawn_at[k] = now + 0.5

    def kill_one(self):
        """SIGKILL the next slot in turn (round robin) and respawn it."""
        k = len(self.kills) % self.W
        victim = self.slots[k]
        victim.kill(signal.SIGKILL)
        t_kill = time.time()
        victim.wait()
        victim.close()
        self.kills.append({"t": t_kill, "slot": k, "log": str(self.slot_log[k])})
        self.slots[k] = self.start(k)

    def drained(self, now) -> bool:
        """The monitor reports nothing left (recently) and no live worker holds a task."""
        try:
            st = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            st = None
        return bool(st and st["t"] > now - 1.0 and st["remaining"] == 0 and _idle(self.slot_log))

    def drive(self, t0) -> None:
        """Kill and respawn until the board is drained, stuck (no completion for 10 s) or past its deadline."""
        cfg = self.cfg
        expected = cfg["b2_tasks"] * cfg["b2_task_s"] / self.W
        deadline = t0 + 3 * expected + 30
        next_kill = t0 + cfg["b2_kill_every"]
        respawn_at = [0.0] * self.W
        last_progress, last_fins = t0, 0
        while True:
            now = time.time()
            self.respawn_crashed(now, respawn_at)
            fins = sum(1 for lp in self.logs for parts in read_log(lp) if parts[0] == "F")
            if fins != last_fins:
                last_fins, last_progress = fins, now
            elif now - last_progress > 10 and len(self.kills) > 0:
                # nothing completed for 10 s although tasks take a fraction of a second: the board is stuck
                self.stuck = True
                break
            if now >= next_kill:
                self.kill_one()
                next_kill += cfg["b2_kill_every"]
            if now > deadline:
                self.timed_out = True
                break
            if self.drained(now):
                break
            time.sleep(0.1)


def once(bench, name, rep):
    """One chaos run of one system on a fresh board."""
    cell, ids = bench.fresh_board(name, bench.cfg["b2_tasks"], f"b2-r{rep}")
    stop = cell / "stop"
    status_file = cell / "status.json"
    monitor = bench.start_monitor(name, cell, bench.cfg["lease"], status_file, stop)
    chaos = _ChaosRun(bench, name, cell, stop, status_file)
    try:
        err = wait_ready([monitor] + chaos.slots, 180)
        if err:
            return {"error": err}
        t0 = time.time()
        chaos.drive(t0)
        t_end = time.time()
    finally:
        stop.touch()
        for pr in chaos.slots + [monitor]:
            pr.wait(10)
            pr.close()
    v = bench.verify(name, cell)
    res = analyze(ids, chaos.logs, chaos.kills, t0, v.pop("done_ids", None))
    res.update(
        {
            "drain_s": t_end - t0,
            "timed_out": chaos.timed_out,
            "kills": len(chaos.kills),
            "verify": v,
            "worker_crashes": chaos.crashed,
            "crash_sample": chaos.crash_sample,
            "stuck": chaos.stuck,
            "integrity": v["integrity"],
        }
    )
    try:
        res["monitor"] = json.loads(status_file.read_text())
    except (OSError, ValueError):
        pass
    res["worker_errors"] = _worker_errors(chaos.logs)
    bench.done_with(cell, keep=v["integrity"] != "ok")
    return res


def _worker_errors(logs):
    busy = errors = 0
    samples = []
    for lp in logs:
        try:
            for line in lp.read_text().splitlines():
                if line.startswith("X "):
                    d = json.loads(line[2:])
                    busy += d["busy"]
                    errors += d["errors"]
                    samples += d["error_samples"]
        except OSError:
            pass
    return {"busy": busy, "errors": errors, "error_samples": samples[:5]}


def _reclaims(kills, per_log, starts, done_on_board=frozenset()):
    """For each task a killed worker held: seconds from the kill to its next start; and how many never restarted
    and how many were held in all. A held task whose completion the board has and no later worker started was
    completed by the killed worker itself (its F line never written): not held, so neither reclaimed nor not."""
    latencies = []
    unreclaimed = 0
    held_total = 0
    for kill in kills:
        held = {}
        for parts in per_log.get(kill["log"], []):
            if parts[0] == "S":
                held[parts[1]] = float(parts[2])
            elif parts[0] == "F":
                held.pop(parts[1], None)
        for tid in held:
            later = [t for t, lp in starts.get(tid, []) if t > kill["t"]]
            if not later and tid in done_on_board:
                continue
            held_total += 1
            if later:
                latencies.append(min(later) - kill["t"])
            else:
                unreclaimed += 1
    return latencies, unreclaimed, held_total


def analyze(ids, logs, kills, t0, done_ids=None):
    """`done_ids`: the tasks the board itself holds completed, from systems whose board can list them (hermes
    kanban). A task no worker logged as accepted is then `unheard` when the board has it done (its completion
    committed; the worker that made it was SIGKILLed before it wrote its F line), and `lost` only when it does not.
    Without `done_ids` (the peers) the workers' logs decide alone, as before."""
    starts: dict[str, list] = {}
    fins: dict[str, list] = {}
    per_log = {}
    for lp in logs:
        entries = read_log(lp)
        per_log[str(lp)] = entries
        for parts in entries:
            tid, t = parts[1], float(parts[2])
            if parts[0] == "S":
                starts.setdefault(tid, []).append((t, str(lp)))
            elif parts[0] == "F":
                fins.setdefault(tid, []).append((t, int(parts[3]), str(lp)))
    accepted = {tid: sum(1 for f in fl if f[1]) for tid, fl in fins.items()}
    unacked = [tid for tid in ids if accepted.get(tid, 0) == 0]
    on_board = set(done_ids or ())
    lost = [tid for tid in unacked if tid not in on_board]
    unheard = [tid for tid in unacked if tid in on_board]
    latencies, unreclaimed, held_total = _reclaims(kills, per_log, starts, on_board)
    return {
        "tasks": len(ids),
        "lost": len(lost),
        "lost_sample": lost[:5],
        "unheard": len(unheard),
        "unheard_known": done_ids is not None,
        "unheard_sample": unheard[:5],
        "dup_exec": sum(max(0, len(fl) - 1) for fl in fins.values()),
        "dup_accepted": sum(max(0, n - 1) for n in accepted.values()),
        "rejected_completions": sum(1 for fl in fins.values() for f in fl if not f[1]),
        "reexecutions": sum(max(0, len(sl) - 1) for sl in starts.values()),
        "killed_holding": held_total,
        "unreclaimed": unreclaimed,
        "reclaim_p50_s": med(latencies),
        "reclaim_max_s": max(latencies) if latencies else None,
        "reclaim_latencies": latencies,
    }


def _log_run(name, rep, r):
    if "error" in r:
        log(f"B2 {name} r{rep}: ERROR {r['error'][:300]}")
    else:
        end = " (TIMED OUT)" if r["timed_out"] else " (STUCK: no progress for 10 s)" if r["stuck"] else ""
        log(
            f"B2 {name} r{rep}: ended after {r['drain_s']:.1f}s{end}, crashes={r['worker_crashes']}"
            f", kills={r['kills']} lost={r['lost']} dup_exec={r['dup_exec']} "
            f"dup_accepted={r['dup_accepted']} reclaim_p50={r['reclaim_p50_s']} "
            f"integrity={r['integrity']}"
        )


SUMMED = (
    "lost",
    "unheard",
    "dup_exec",
    "dup_accepted",
    "rejected_completions",
    "reexecutions",
    "kills",
    "killed_holding",
    "unreclaimed",
)


def _aggregate(row, recovery_desc):
    """A system's figures over its runs: counts summed, reclaim latencies pooled."""
    good = [r for r in row["runs"] if "error" not in r]
    if not good:
        row["error"] = row["runs"][0]["error"] if row["runs"] else "no run"
        return
    row["n_runs"] = len(good)
    for key in SUMMED:
        row[key] = sum(r.get(key, 0) for r in good)  # .get: results saved before `unheard` existed
    row["unheard_known"] = all(r.get("unheard_known") for r in good)
    row["reclaim_p50_s"] = med([x for r in good for x in r["reclaim_latencies"]])
    row["reclaim_max_s"] = max([x for r in good for x in r["reclaim_latencies"]], default=None)
    row["drain_s"] = med([r["drain_s"] for r in good])
    row["timed_out"] = sum(1 for r in good if r["timed_out"])
    row["stuck"] = sum(1 for r in good if r["stuck"])
    row["worker_crashes"] = sum(r["worker_crashes"] for r in good)
    row["crash_sample"] = next((r["crash_sample"] for r in good if r["crash_sample"]), None)
    row["integrity"] = (
        "ok"
        if all(r["integrity"] == "ok" for r in good)
        else "; ".join(r["integrity"] for r in good if r["integrity"] != "ok")
    )
    row["recovery"] = recovery_desc


def run(bench):
    """b2_repeats rounds; in each, every system's run goes side by side (one thread each)."""
    cfg = bench.cfg
    rows = {name: {"system": name, "runs": []} for name in bench.avail()}
    for rep in range(cfg["b2_repeats"]):
        log(
            f"B2 chaos repeat {rep + 1}/{cfg['b2_repeats']}: {cfg['b2_tasks']} tasks x {cfg['b2_task_s']}s, "
            f"{cfg['b2_workers']} workers, SIGKILL every {cfg['b2_kill_every']}s; systems side by side"
        )

        def one(name, rep):
            try:
                r = once(bench, name, rep)
            except Exception as exc:  # noqa: BLE001 - one system's failure must not stop the others
                r = {"error": f"{type(exc).__name__}: {exc}"}
            rows[name]["runs"].append(r)
            _log_run(name, rep, r)

        threads = [threading.Thread(target=one, args=(name, rep)) for name in bench.avail()]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    for name, row in rows.items():
        _aggregate(row, bench.info[name]["recovery_desc"])
    bench.results["b2"] = [rows[n] for n in bench.avail()]


HEADERS = [
    "system",
    "kills",
    "crashes",
    "lost",
    "unheard",
    "dup exec",
    "dup accepted",
    "reclaim s p50/max",
    "unreclaimed/held",
    "drain s",
    "integrity",
]


def _render_row(r) -> list:
    if "error" in r:
        return [r["system"], "ERROR"] + [""] * 8 + [r["error"][:200]]
    ended = fmt(r["drain_s"], 1)
    if r["timed_out"]:
        ended += f" ({r['timed_out']} timed out)"
    if r["stuck"]:
        ended += f" ({r['stuck']} stuck)"
    return [
        r["system"],
        r["kills"],
        r["worker_crashes"],
        r["lost"],
        r["unheard"] if r.get("unheard_known") else "n/a",
        r["dup_exec"],
        r["dup_accepted"],
        f"{fmt(r['reclaim_p50_s'], 2)}/{fmt(r['reclaim_max_s'], 2)}",
        f"{r['unreclaimed']}/{r['killed_holding']}",
        ended,
        r["integrity"][:60],
    ]


def render(res: dict) -> list[str]:
    if not res.get("b2"):
        return []
    c = res["config"]
    title = (
        f"\nB2 chaos: {c['b2_tasks']} tasks x {c['b2_task_s']} s, {c['b2_workers']} workers, one SIGKILLed "
        f"every {c['b2_kill_every']} s and respawned, lease/threshold {c['lease']} s; {c['b2_repeats']} "
        "run(s), counts summed, reclaim = kill -> task claimed again (median/max)"
    )
    return [title, table(HEADERS, [_render_row(r) for r in res["b2"]])]
