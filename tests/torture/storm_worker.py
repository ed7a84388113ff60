"""One kill-storm worker (tests/torture/test_kill_storm.py): real claim / heartbeat / complete through
`hermes_cli.kanban.Board` until it is SIGKILLed.

usage: python storm_worker.py DB LOG_DIR NAME LEASE_SECONDS SEED

Every write the board acknowledged (the call returned) is appended to LOG_DIR/NAME.PID.jsonl and fsynced
*after* the call returned, so the checker can demand that each logged write is in the database. A kill between
the call returning and the log write only makes the checker demand less. BoardBusy ("database is locked"
surfacing to a worker) and StaleRun (this worker was fenced off) are logged too, as counters. Anything else is
a bug: it is logged as an `error` record, the traceback goes to stderr, and the worker exits 1.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback

from hermes_cli.kanban.core.errors import BoardBusy, StaleRun
from hermes_cli.kanban.domain.board import Board


class Log:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def ack(self, **record: object) -> None:
        os.write(self.fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        os.fsync(self.fd)


def work(board: Board, log: Log, name: str, lease: float, rng: random.Random) -> None:
    pid = os.getpid()
    while True:
        try:
            claim = board.claim(worker=name, ttl=lease, pid=pid)
        except BoardBusy as exc:
            log.ack(op="busy", during="claim", msg=str(exc))
            continue
        if claim is None:
            # Nothing claimable: make more work. Creating is an acknowledged write too.
            for _ in range(5):
                try:
                    task, _created = board.create_task(f"made by {name}", priority=rng.randint(0, 3))
                except BoardBusy as exc:
                    log.ack(op="busy", during="create", msg=str(exc))
                    continue
                log.ack(op="create", task=task.id)
            continue
        task_id, run_id = claim.task_id, claim.run_id
        log.ack(op="claim", task=task_id, run=run_id, lease=claim.lease_expires_at)
        try:
            for _ in range(rng.randint(0, 3)):
                time.sleep(rng.uniform(0.0, 0.03))
                beat = board.heartbeat(task_id, run_id, ttl=lease)
                log.ack(op="heartbeat", task=task_id, run=run_id, lease=beat.lease_expires_at)
            if rng.random() < 0.05:
                board.block(task_id, run_id, reason=f"{name} needs a person")
                log.ack(op="block", task=task_id, run=run_id)
            else:
                board.complete(task_id, run_id, summary=f"{name} pid {pid}")
                log.ack(op="complete", task=task_id, run=run_id)
        except StaleRun as exc:
            # Our lease ran out and the task was taken over: fencing did its job; nothing of ours was written.
            log.ack(op="stale", task=task_id, run=run_id, msg=str(exc))
        except BoardBusy as exc:
            log.ack(op="busy", during="run", task=task_id, run=run_id, msg=str(exc))


def main(argv: list[str]) -> int:
    db, log_dir, name, lease, seed = argv[1], argv[2], argv[3], float(argv[4]), int(argv[5])
    log = Log(os.path.join(log_dir, f"{name}.{os.getpid()}.jsonl"))
    rng = random.Random(seed)
    try:
        board = Board.open(db_path=db, create=False)
        log.ack(op="open")
        work(board, log, name, lease, rng)
    except BoardBusy as exc:
        log.ack(op="busy", during="open", msg=str(exc))
        return 0
    except Exception as exc:  # a bug: make it loud for the checker, then fail
        log.ack(op="error", type=type(exc).__name__, msg=str(exc))
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
