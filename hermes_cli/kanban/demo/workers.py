"""Worker programs for `hermes kanban demo` (and the dispatcher's tests): `python -m hermes_cli.kanban.demo.workers
ACTION [ARG]`. They follow the worker contract: the task and run come from the environment, the cwd is the task's
workspace, output goes to the task's log.

    work SECONDS [TEXT]   print, sleep, exit 0 (the dispatcher records "exited 0" as completed)
    crash-once            exit 1 on the task's first attempt, exit 0 on a retry (the board counts the attempts, so this
                          holds on whichever host the retry runs: `demo --postgres`)
    hang                  sleep far past any max runtime (the dispatcher kills it: timed_out)
    report SUMMARY        run `hermes kanban complete --summary SUMMARY` itself, then exit 0
    block REASON          run `hermes kanban block REASON` itself, then exit 1: the report wins over the exit code
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def _hermes(*args: str) -> int:
    """The hermes CLI of this very installation (no reliance on PATH)."""
    return subprocess.call([sys.executable, "-m", "hermes_cli.main", "kanban", *args])


def _attempt(task: str) -> int:
    """This run's attempt number, as the board counts it (`hermes kanban show TASK --json`)."""
    out = subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", "show", task, "--json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return int(json.loads(out)["attempts"])


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    action, args = argv[0], argv[1:]
    task = os.environ.get("HERMES_KANBAN_TASK", "?")
    run = os.environ.get("HERMES_KANBAN_RUN_ID", "?")
    print(f"{action} worker for {task} run {run} in {os.getcwd()}", flush=True)
    if action == "work":
        seconds = float(args[0]) if args else 0.5
        time.sleep(seconds)
        print(args[1] if len(args) > 1 else f"worked {seconds:g}s", flush=True)
        return 0
    if action == "crash-once":
        if _attempt(task) <= 1:
            print("simulated crash on the first attempt", flush=True)
            return 1
        print("the retry succeeds", flush=True)
        return 0
    if action == "hang":
        time.sleep(600)
        return 0
    if action == "report":
        code = _hermes("complete", "--summary", args[0] if args else "reported by the worker")
        print(f"hermes kanban complete exited {code}", flush=True)
        return 0 if code == 0 else code
    if action == "block":
        code = _hermes("block", task, args[0] if args else "needs a human")
        print(f"hermes kanban block exited {code}; now exiting 1 (the report wins)", flush=True)
        return 1
    print(f"unknown action {action!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
