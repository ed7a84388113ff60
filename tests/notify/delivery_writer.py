"""A writer process for the delivery test: waits for the start file, then commits N events on the default board
(one `created`, then comments), timing every doorbell ring and every whole write. Prints one JSON line of figures.

Run as a script: python delivery_writer.py N START_FILE
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from hermes_cli.kanban import Board
from hermes_cli.kanban.live import doorbell


def _schedstat() -> tuple[int, int]:
    """(ns on CPU, ns waiting on the run queue) of this thread, from /proc/thread-self/schedstat."""
    with open("/proc/thread-self/schedstat", "rb") as f:
        on_cpu, waiting, _ = f.read().split()
    return int(on_cpu), int(waiting)


#: wall time of every ring, and the part of it the thread spent asleep (wall minus CPU time minus time waiting for
#: a CPU): a ring can be preempted on a busy machine, but it must never block.
ring_s: list[float] = []
blocked_s: list[float] = []
_real_ring = doorbell.ring


def timed_ring(notify_dir: Path) -> int:
    """The real doorbell.ring (which every committing write calls), timed."""
    cpu0, wait0 = _schedstat()
    t = time.perf_counter_ns()
    woken = _real_ring(notify_dir)
    wall = time.perf_counter_ns() - t
    cpu1, wait1 = _schedstat()
    ring_s.append(wall / 1e9)
    blocked_s.append(max(0, wall - (cpu1 - cpu0) - (wait1 - wait0)) / 1e9)
    return woken


def main() -> None:
    n, start_file = int(sys.argv[1]), Path(sys.argv[2])
    doorbell.ring = timed_ring  # Board.open's after-commit hook rings through the module attribute
    board = Board.open()
    while not start_file.exists():
        time.sleep(0.005)
    write_s: list[float] = []
    t = time.perf_counter()
    task, _ = board.create_task(f"writer {os.getpid()}")
    write_s.append(time.perf_counter() - t)
    for i in range(n - 1):
        t = time.perf_counter()
        board.comment(task.id, f"comment {i}")
        write_s.append(time.perf_counter() - t)
    board.close()
    write_s.sort()
    print(json.dumps({
        "events": n, "rings": len(ring_s), "max_ring_s": max(ring_s),
        "max_ring_blocked_s": max(blocked_s),
        "p99_ring_s": sorted(ring_s)[int(len(ring_s) * 0.99)],
        "p50_write_s": write_s[len(write_s) // 2], "p99_write_s": write_s[int(len(write_s) * 0.99)],
        "max_write_s": write_s[-1],
    }))


if __name__ == "__main__":
    main()
