"""Start-up cost of the commands agents run all day, next to a bare interpreter, in one run.

Times `python -c pass` and `hermes kanban create|show|claim|heartbeat|complete|block` and `hermes kanban --help`,
interleaved round-robin (one call of each per round, so a burst of load hits every command alike), and prints each
command's median wall time and its ratio to `python -c pass`. Issue 11's target: every ratio <= 3.

The baseline is the interpreter the `hermes` console script runs with (its shebang), not whatever `python3` is first
on PATH: a pyenv shim, for one, is itself a shell script that costs several times a bare interpreter and would
flatter the ratios. Workers report from inside a dispatched process, so `heartbeat`, `complete` and `block` run with
HERMES_KANBAN_TASK / HERMES_KANBAN_RUN_ID set (the worker path, fenced by the run id) on tasks claimed in set-up.

    python bench/cli_startup.py                 # 21 rounds, on an idle board and on one held open
    python bench/cli_startup.py --rounds 11 --json

Two settings, because closing a board is cheap or not depending on who else has it open: a command that is the
last to close a board checkpoints the WAL into it (SQLite's default), which under `synchronous=FULL` costs fsyncs
on every call; while another process (a dispatcher, the TUI) keeps the board open, nothing checkpoints on close.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def hermes_script(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(sys.executable).parent / "hermes"


def interpreter_of(script: Path) -> str:
    first = script.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    return first[2:].strip().split()[0] if first.startswith("#!") else sys.executable


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call. CPU time (user + system, from the child's rusage) is what the call
    itself costs; wall time adds the wait for a CPU, which dominates on a loaded machine."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} exited {p.returncode}: {err.read().decode(errors='replace').strip()}")
    return dt, usage.ru_utime + usage.ru_stime


def measure(python: str, hermes: Path, n: int, held: bool) -> dict[str, list[tuple[float, float]]]:
    """n interleaved rounds of every command on a fresh board; with `held`, another process keeps the board open
    (as a running dispatcher or TUI does), so no command is the last to close it and none checkpoints on close."""
    with tempfile.TemporaryDirectory(prefix="hermes-cli-startup-") as tmp:
        # Bytecode caching on (an installed package has its .pyc files): PYTHONDONTWRITEBYTECODE would make every
        # call compile the package from source and measure the compiler instead.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_") and k != "PYTHONDONTWRITEBYTECODE"}
        env["HERMES_HOME"] = str(Path(tmp) / "home")
        os.environ["HERMES_HOME"] = env["HERMES_HOME"]
        for k in [k for k in os.environ if k.startswith("HERMES_KANBAN_")]:
            del os.environ[k]
        from hermes_cli.kanban.domain.board import Board

        # set-up through the API: one task to show, n (+1 warm-up) to claim, as many claimed ones each for complete
        # and block, one claimed one to heartbeat
        with Board.open(None, create=True) as b:
            shown = b.create_task("shown")[0].id
            to_claim = [b.create_task(f"claim {i}")[0].id for i in range(n + 1)]

            def claimed(title: str) -> tuple[str, int]:
                t = b.create_task(title)[0]
                c = b.claim(t.id, worker="bench", ttl="2h")
                assert c is not None
                return t.id, c.run_id

            to_complete = [claimed(f"complete {i}") for i in range(n + 1)]
            to_block = [claimed(f"block {i}") for i in range(n + 1)]
            beating = claimed("heartbeat")

        def worker(task_run: tuple[str, int]) -> dict[str, str]:
            return {**env, "HERMES_KANBAN_TASK": task_run[0], "HERMES_KANBAN_RUN_ID": str(task_run[1])}

        h = [python, str(hermes), "kanban"]
        commands: dict[str, Callable[[int], tuple[list[str], dict[str, str]]]] = {
            "python -c pass": lambda i: ([python, "-c", "pass"], env),
            "hermes kanban create": lambda i: ([*h, "create", f"task {i}"], env),
            "hermes kanban show --json": lambda i: ([*h, "show", shown, "--json"], env),
            "hermes kanban claim": lambda i: ([*h, "claim", to_claim[i]], env),
            "hermes kanban heartbeat": lambda i: ([*h, "heartbeat"], worker(beating)),
            "hermes kanban complete": lambda i: ([*h, "complete", "--summary", "done"], worker(to_complete[i])),
            "hermes kanban block": lambda i: ([*h, "block", "needs a key"], worker(to_block[i])),
            "hermes kanban --help": lambda i: ([*h, "--help"], env),
        }
        holder = None
        if held:
            holder = subprocess.Popen(
                [python, "-c", "import sys\nfrom hermes_cli.kanban.domain.board import Board\nb = Board.open(None)\n"
                 "b.stats()\nsys.stdin.read()"], env=env, stdin=subprocess.PIPE)
            time.sleep(1.0)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        try:
            for i in range(n + 1):  # round 0 warms the caches (and writes the .pyc files) and is not counted
                for name, make in commands.items():
                    cmd, cmd_env = make(i)
                    dt = _run(cmd, cmd_env)
                    if i:
                        samples[name].append(dt)
        finally:
            if holder is not None:
                assert holder.stdin is not None
                holder.stdin.close()
                holder.wait(timeout=30)
    return samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=21, help="calls of each command (the median is reported)")
    ap.add_argument("--hermes", default=None, help="the console script (default: next to this interpreter)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    hermes = hermes_script(args.hermes)
    python = interpreter_of(hermes)
    n = args.rounds
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for label, held in (("idle board", False), ("board held open by another process", True)):
        samples = measure(python, hermes, n, held)
        base_wall = statistics.median(w for w, _ in samples["python -c pass"])
        base_cpu = statistics.median(c for _, c in samples["python -c pass"])
        results[label] = {}
        for name, pairs in samples.items():
            wall = statistics.median(w for w, _ in pairs)
            cpu = statistics.median(c for _, c in pairs)
            results[label][name] = {"median_ms": round(wall * 1000, 1), "ratio": round(wall / base_wall, 2),
                                    "cpu_median_ms": round(cpu * 1000, 1), "cpu_ratio": round(cpu / base_cpu, 2)}
    load_after = os.getloadavg()[0]
    info = {"python": platform.python_version(), "interpreter": python, "entry": _entry(hermes), "rounds": n,
            "cpus": os.cpu_count(), "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(load_after, 2)}
    if args.json:
        print(json.dumps({"environment": info, "results": results}, indent=2))
        return 0
    print(f"hermes CLI start-up: median of {n} interleaved calls each, and its ratio to `python -c pass`; wall time,"
          " and CPU time (user+sys: the call's own cost, which load inflates less)")
    print("  " + ", ".join(f"{k} {v}" for k, v in info.items()))
    for label, rows in results.items():
        print(f"  {label}:")
        print(f"    {'':<26} {'wall':>10} {'ratio':>6}   {'cpu':>10} {'ratio':>6}")
        for name, row in rows.items():
            flag = "" if name == "python -c pass" or row["ratio"] <= 3 else "   (wall above the 3x target)"
            print(f"    {name:<26} {row['median_ms']:>7.1f} ms {row['ratio']:>5.2f}x   {row['cpu_median_ms']:>7.1f} ms "
                  f"{row['cpu_ratio']:>5.2f}x{flag}")
    return 0


def _entry(script: Path) -> str:
    """The module the console script imports `main` from (hermes_cli.fast since issue 11)."""
    for line in script.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("from ") and " import main" in line:
            return line.split()[1]
    return "?"


if __name__ == "__main__":
    sys.exit(main())
