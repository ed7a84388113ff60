"""Benchmark driver. Runs INSIDE one system's virtualenv, as a real separate process spawned by run.py.

    <venv>/bin/python bench/compare/worker.py ROLE --adapter NAME [options]

Roles
  info       print the adapter's facts as JSON
  serve      JSON-lines control loop on stdin/stdout: {"op": "seed"|"verify"|"info", ...}; every op opens and closes
             its own connection, so the helper holds nothing open while workers run
  burn       B1/B3 worker: claim -> complete as fast as possible between "go" and the deadline
  chaos      B2 worker: claim, log "S", sleep task_s (heartbeat half way), complete, log "F"; until the stop file
  monitor    B2: every tick run the system's own recovery (if it is tick based) and write remaining() to a file
  stall      B2 stall test: claim one task, print it, hold it, complete it, print whether it was accepted
  observer   B3: read the board summary every interval
  writer     B3: add a task every interval

burn/observer/writer print "ready" once the board is open, then wait for "go <t_go> <t_end>" on stdin (a start
barrier, so process start-up and imports are never measured), and write their results as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from adapters import load  # noqa: E402
from adapters.base import NotSupported  # noqa: E402

MAX_ERRORS = 50


def is_busy(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "locked" in text or "busy" in text


class Stats:
    def __init__(self):
        self.busy = 0
        self.errors = 0
        self.error_samples: list[str] = []

    def call(self, fn, *args):
        """Call fn, retrying on BUSY/locked (counted) and on other errors (counted, bounded)."""
        while True:
            try:
                return fn(*args)
            except NotSupported:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                if is_busy(exc):
                    self.busy += 1
                    time.sleep(random.uniform(0.001, 0.005))
                    continue
                self.errors += 1
                if len(self.error_samples) < 5:
                    self.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
                if self.errors > MAX_ERRORS:
                    raise
                time.sleep(0.01)

    def as_dict(self):
        return {"busy": self.busy, "errors": self.errors, "error_samples": self.error_samples}


def _close_quietly(session) -> None:
    try:
        session.close()
    except Exception:  # noqa: BLE001 - results are already written; a failing close changes nothing
        pass


def barrier() -> tuple[float, float]:
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if not line or line[0] != "go":
        raise SystemExit("no go")
    return float(line[1]), float(line[2])


def write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def role_burn(ad, a):
    s = ad.open(Path(a.dir), a.durability, a.lease)
    if a.next:
        s.use_complete_next()  # NotSupported -> "NOTSUPPORTED ..." before the barrier
    st = Stats()
    completed: list[str] = []
    claim_lat: list[float] = []
    complete_lat: list[float] = []
    rejected = 0
    t_go, t_end = barrier()
    while time.time() < t_go:
        time.sleep(0.0005)
    t_last = time.time()
    fatal = None
    try:
        while True:
            now = time.time()
            if now >= t_end or (a.max_tasks is not None and len(completed) >= a.max_tasks):
                break
            t0 = time.perf_counter()
            tok = st.call(s.claim_one)
            t1 = time.perf_counter()
            if tok is None:
                if a.stop_on_empty:
                    break
                time.sleep(0.01)
                continue
            claim_lat.append(t1 - t0)
            ok = st.call(s.complete, tok)
            t2 = time.perf_counter()
            complete_lat.append(t2 - t1)
            if ok:
                completed.append(s.token_id(tok))
            else:
                rejected += 1
            t_last = time.time()
    except Exception as exc:  # noqa: BLE001 - too many errors: stop, but still report what was done
        fatal = f"{type(exc).__name__}: {exc}"[:500]
    out = {
        "completed": completed,
        "claim_lat": claim_lat,
        "complete_lat": complete_lat,
        "rejected": rejected,
        "t_go": t_go,
        "t_last": t_last,
        "conflicts": getattr(s, "conflicts", 0),
        # next scenario: a claim made by the last complete and never handed out stays in flight on the board
        "pending": int(getattr(s, "pending", None) is not None),
        "fatal": fatal,
        **st.as_dict(),
    }
    write_json(a.out, out)
    _close_quietly(s)


def role_chaos(ad, a):
    s = ad.open(Path(a.dir), a.durability, a.lease)
    st = Stats()
    stop = Path(a.stop_file)
    log = open(a.log, "a", buffering=1)
    print("ready", flush=True)
    can_heartbeat = True
    while not stop.exists():
        tok = st.call(s.claim_one)
        if tok is None:
            time.sleep(0.05)
            continue
        tid = s.token_id(tok)
        log.write(f"S {tid} {time.time():.6f}\n")
        time.sleep(a.task_s / 2)
        if can_heartbeat:
            try:
                hb = st.call(s.heartbeat, tok)
                log.write(f"H {tid} {time.time():.6f} {int(bool(hb))}\n")
            except NotSupported:
                can_heartbeat = False
        time.sleep(a.task_s / 2)
        ok = st.call(s.complete, tok)
        log.write(f"F {tid} {time.time():.6f} {int(bool(ok))}\n")
    log.write(f"X {json.dumps(st.as_dict())}\n")
    log.close()
    s.close()


def role_monitor(ad, a):
    s = ad.open(Path(a.dir), a.durability, a.lease)
    st = Stats()
    stop = Path(a.stop_file)
    recovered = 0
    do_recover = a.recover
    print("ready", flush=True)
    while not stop.exists():
        if do_recover:
            try:
                recovered += st.call(s.recover)
            except NotSupported:
                do_recover = False
        remaining = st.call(s.remaining)
        write_json(a.out, {"t": time.time(), "remaining": remaining, "recovered": recovered, **st.as_dict()})
        time.sleep(a.tick)
    s.close()


def role_stall(ad, a):
    s = ad.open(Path(a.dir), a.durability, a.lease)
    st = Stats()
    print("ready", flush=True)
    deadline = time.time() + a.claim_timeout
    tok = None
    while time.time() < deadline:
        tok = st.call(s.claim_one)
        if tok is not None:
            break
        time.sleep(0.05)
    if tok is None:
        print("NOCLAIM", flush=True)
        s.close()
        return
    tid = s.token_id(tok)
    print(f"S {tid} {time.time():.6f}", flush=True)
    hb_results = []
    if a.heartbeat_every > 0:
        end = time.time() + a.hold
        while time.time() < end:
            time.sleep(min(a.heartbeat_every, max(0.0, end - time.time())))
            try:
                hb_results.append(int(bool(st.call(s.heartbeat, tok))))
            except NotSupported:
                pass
    else:
        time.sleep(a.hold)  # a single sleep, so SIGSTOP/SIGCONT simply stretch it
    ok = st.call(s.complete, tok)
    print(f"F {tid} {time.time():.6f} {int(bool(ok))} {json.dumps(hb_results)} {json.dumps(st.as_dict())}", flush=True)
    s.close()


def role_observer(ad, a):
    s = ad.open(Path(a.dir), a.durability, a.lease)
    st = Stats()
    lat = []
    try:
        s.summary()  # fail fast (NotSupported) before the barrier
    except NotSupported as exc:
        print(f"NOTSUPPORTED {exc}", flush=True)
        return
    t_go, t_end = barrier()
    while time.time() < t_go:
        time.sleep(0.0005)
    nxt = time.time()
    fatal = None
    try:
        while time.time() < t_end:
            t0 = time.perf_counter()
            st.call(s.summary)
            lat.append(time.perf_counter() - t0)
            nxt += a.interval
            time.sleep(max(0.0, nxt - time.time()))
    except Exception as exc:  # noqa: BLE001 - too many errors: stop, but still report
        fatal = f"{type(exc).__name__}: {exc}"[:500]
    write_json(a.out, {"lat": lat, "fatal": fatal, **st.as_dict()})
    _close_quietly(s)


def role_writer(ad, a):
    s = ad.open(Path(a.dir), a.durability, a.lease)
    st = Stats()
    lat = []
    t_go, t_end = barrier()
    while time.time() < t_go:
        time.sleep(0.0005)
    nxt = time.time()
    i = 10_000_000
    fatal = None
    try:
        while time.time() < t_end:
            t0 = time.perf_counter()
            st.call(s.add_task, i)
            lat.append(time.perf_counter() - t0)
            i += 1
            nxt += a.interval
            time.sleep(max(0.0, nxt - time.time()))
    except Exception as exc:  # noqa: BLE001 - too many errors: stop, but still report
        fatal = f"{type(exc).__name__}: {exc}"[:500]
    write_json(a.out, {"lat": lat, "fatal": fatal, **st.as_dict()})
    _close_quietly(s)


def role_serve(ad, a):
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            op = req["op"]
            if op == "info":
                res = ad.info()
            elif op == "seed":
                t0 = time.time()
                ids = ad.seed(Path(req["dir"]), int(req["n"]))
                with open(req["ids_file"], "w") as f:
                    f.write("\n".join(ids) + "\n")
                res = {"n": len(ids), "seconds": time.time() - t0}
            elif op == "verify":
                res = ad.verify(Path(req["dir"]))
            else:
                raise ValueError(f"unknown op {op}")
            print(json.dumps({"ok": True, "result": res}), flush=True)
        except Exception as exc:  # noqa: BLE001 - reported to the orchestrator, which decides
            print(
                json.dumps(
                    {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
                ),
                flush=True,
            )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role")
    p.add_argument("--adapter", required=True)
    p.add_argument("--dir")
    p.add_argument("--durability", default="full")
    p.add_argument("--lease", type=float, default=60.0)
    p.add_argument("--out")
    p.add_argument("--log")
    p.add_argument("--stop-file")
    p.add_argument("--stop-on-empty", action="store_true")
    p.add_argument("--max-tasks", type=int, default=None, help="stop after this many completions (0 = none)")
    p.add_argument("--task-s", type=float, default=0.25)
    p.add_argument("--tick", type=float, default=0.25)
    p.add_argument("--recover", action="store_true")
    p.add_argument("--hold", type=float, default=0.5)
    p.add_argument("--heartbeat-every", type=float, default=0.0)
    p.add_argument("--claim-timeout", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=0.25)
    p.add_argument("--next", action="store_true", help="burn: complete also claims the next (use_complete_next)")
    a = p.parse_args()
    ad = load(a.adapter)
    if a.role == "info":
        print(json.dumps(ad.info()))
        return
    roles = {
        "serve": role_serve,
        "burn": role_burn,
        "chaos": role_chaos,
        "monitor": role_monitor,
        "stall": role_stall,
        "observer": role_observer,
        "writer": role_writer,
    }
    try:
        roles[a.role](ad, a)
    except NotSupported as exc:
        print(f"NOTSUPPORTED {exc}", flush=True)
        sys.exit(0)


if __name__ == "__main__":
    main()
