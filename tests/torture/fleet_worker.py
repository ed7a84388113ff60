"""A pull worker of the multi-host chaos test (tests/torture/test_pg_fleet_chaos.py), run on one simulated host.

Loops: claim (Board API), work a moment, report through the CLI's own report path (`hermes_cli.cli.hot.complete`,
which spools the report when the board cannot be reached), and logs every outcome as one JSON line:
{"task", "run", "outcome": "accepted" | "stale" | "spooled" | "error"}. Exits when the stop file exists.
Usage: fleet_worker.py LOG STOPFILE WORKER_NAME TTL_S
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from hermes_cli.cli import hot
from hermes_cli.kanban import Board
from hermes_cli.kanban.core.errors import Conflict, HermesError, StorageError


def main() -> None:
    log_path, stop_file, name, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    log = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (one line per report, flushed)

    def note(**fields: object) -> None:
        log.write(json.dumps(fields) + "\n")

    while not os.path.exists(stop_file):
        try:
            with Board.open() as board:
                claim = board.claim(worker=name, ttl=ttl, pid=os.getpid())
        except StorageError:
            time.sleep(0.3)  # the board is unreachable: try again (claims are never spooled)
            continue
        if claim is None:
            time.sleep(0.2)
            continue
        time.sleep(random.uniform(0, 0.05))  # the work
        try:
            out = hot.complete(None, [claim.task_id], run_id=claim.run_id, summary=f"done by {name}")
            spooled = isinstance(out.data, dict) and bool(out.data.get("spooled"))
            note(task=claim.task_id, run=claim.run_id, outcome="spooled" if spooled else "accepted")
        except Conflict:
            note(task=claim.task_id, run=claim.run_id, outcome="stale")
        except HermesError as err:
            note(task=claim.task_id, run=claim.run_id, outcome="error", error=err.message)


if __name__ == "__main__":
    main()
