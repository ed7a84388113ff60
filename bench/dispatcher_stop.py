"""Dispatcher restart and stop times (issue 9, items 3-5), with real processes and signals.

    takeover   a dispatcher is SIGKILLed; a new `dispatch --once` is started: seconds from the kill to the new one's
               `dispatcher_started` event (the lease grace is 30 s: only the dead holder check lets it in earlier)
    standby    a second dispatcher stands by behind a live one; the first is SIGKILLed: seconds from the kill to
               the standby holding the lease
    stop-now   a dispatcher with a running worker while another process holds the write lock (BEGIN IMMEDIATE), at
               the default busy timeout: seconds from the second SIGTERM to the process's exit
    exit0      a worker exits 0 while another process holds the write lock past the dispatcher's busy budget: the
               run's outcome once the lock is released (must be `completed`)

Usage: python bench/dispatcher_stop.py [-n 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERMES = str(Path(sys.executable).with_name("hermes"))
LOCKER = ("import sys, apsw\nc = apsw.Connection(sys.argv[1]); c.setbusytimeout(30000); c.execute('BEGIN IMMEDIATE')\n"
          "print('locked', flush=True); sys.stdin.readline(); c.execute('ROLLBACK')")
CONFIG = '[dispatch]\nlease_grace = "30s"\nworker_ttl = "60s"\nbackup_interval = "off"\npoll_interval = "2s"\n'


def _env(home: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
    return {**env, "HERMES_HOME": home, **extra}


def _board(home: str) -> Any:
    os.environ["HERMES_HOME"] = home
    from hermes_cli.kanban import Board

    b = Board.open()
    b.paths.config_file.write_text(CONFIG, encoding="utf-8")
    return b


def _wait(pred: Any, timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.005)
    raise TimeoutError("condition not met")


def _start(home: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([HERMES, "kanban", "daemon", "--quiet", *args], env=_env(home, **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _holder(board: Any) -> int | None:
    from hermes_cli.kanban.dispatch import lease as leases

    lease = leases.read_lease(board)
    return None if lease is None else lease.pid


def _locker(board: Any) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", LOCKER, str(board.paths.db)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "locked\n"
    return p


def _release(p: subprocess.Popen[str]) -> None:
    p.communicate("\n", timeout=30)


def takeover(home: str) -> float:
    board = _board(home)
    a = _start(home)
    _wait(lambda: _holder(board) == a.pid)
    a.kill()
    a.wait()
    killed = time.time()
    b = _start(home, "--once")
    b.wait(timeout=60)
    started = [e for e in board.events(kinds=["dispatcher_started"]) if e.payload.get("pid") == b.pid]
    board.close()
    if not started:
        raise RuntimeError("the second dispatcher skipped")
    return float(started[0].created_at - killed)


def standby(home: str) -> float:
    board = _board(home)
    a = _start(home)
    _wait(lambda: _holder(board) == a.pid)
    b = _start(home)
    time.sleep(1.5)  # b is up and standing by
    a.kill()
    a.wait()
    killed = time.monotonic()
    _wait(lambda: _holder(board) == b.pid)
    took = time.monotonic() - killed
    b.send_signal(signal.SIGTERM)
    b.wait(timeout=60)
    board.close()
    return took


def stop_now(home: str) -> float:
    board = _board(home)
    board.create_task("stuck", command=shlex.join(["sleep", "600"]))
    d = _start(home)
    _wait(lambda: any(r.pid for r in board.open_runs()))
    workers = [(r.pid, r.pid_create_time) for r in board.open_runs()]
    lock = _locker(board)
    try:
        d.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        d.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        d.wait(timeout=120)
        took = time.monotonic() - sent
    finally:
        _release(lock)
        for pid, _ in workers:
            os.killpg(pid, signal.SIGKILL)
        board.close()
    return took


def exit0(home: str) -> str:
    board = _board(home)
    go = Path(home) / "go"
    code = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.02)"
    task, _ = board.create_task("exit 0 under a held lock", command=shlex.join([sys.executable, "-c", code, str(go)]))
    d = _start(home, "--until-idle", HERMES_KANBAN_BUSY_TIMEOUT_MS="100")
    _wait(lambda: any(r.pid for r in board.open_runs()))
    lock = _locker(board)
    try:
        go.touch()
        time.sleep(3.0)  # about three times the busy budget (8 x 100 ms)
    finally:
        _release(lock)
    d.wait(timeout=120)
    runs = board.detail(task.id, events=0).runs
    board.close()
    return ",".join(str(r.outcome) for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5, help="repetitions of each measurement (default 5)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    out: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_1m": load0}
    for name, fn in (("takeover_s", takeover), ("standby_s", standby), ("stop_now_s", stop_now),
                     ("exit0_outcomes", exit0)):
        values = []
        for _ in range(args.n):
            with tempfile.TemporaryDirectory(prefix="hermes-bench-") as home:
                values.append(fn(home))
        out[name] = values
    out["loadavg_1m_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(out))
        return
    print(f"dispatcher stop/takeover bench: n={args.n}, cpus {out['cpus']}, loadavg_1m {load0:.2f} -> "
          f"{out['loadavg_1m_after']:.2f}")
    for key in ("takeover_s", "standby_s", "stop_now_s"):
        v = out[key]
        print(f"  {key:11} median {statistics.median(v):.3f}  max {max(v):.3f}  all {' '.join(f'{x:.3f}' for x in v)}")
    print(f"  exit0 outcomes: {out['exit0_outcomes']}")


if __name__ == "__main__":
    main()
