"""Paths, the compared systems, the two run profiles, and the progress log (stderr)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # bench/compare
BENCH = HERE.parent
ROOT = BENCH.parent
WORKER = HERE / "worker.py"

ORDER = ["hermes-kanban", "hermes-agent", "huey", "litequeue", "persist-queue"]
SYSTEMS = {
    # name -> pip requirements installed into bench/.venvs/<name>
    "hermes-kanban": {"pip": [str(ROOT)], "local": True},
    "hermes-agent": {"pip": ["hermes-agent==0.19.0"]},
    "huey": {"pip": ["huey==3.5.4"]},
    "litequeue": {"pip": ["litequeue==0.9"]},
    "persist-queue": {"pip": ["persist-queue==1.1.0"]},
}
DURABILITIES = ["full", "normal"]

PROFILES = {
    "full": {
        "repeats": 3,
        "b1_board": 20_000,
        "b1_window": 1.5,
        "b1_workers": [1, 2, 4, 8],
        "b2_tasks": 400,
        "b2_task_s": 0.25,
        "b2_workers": 4,
        "b2_kill_every": 3.0,
        "b2_repeats": 3,
        "lease": 2.0,
        "stall_k": 3,
        "b3_sizes": [10_000, 100_000],
        "b3_duration": 3.0,
        "b3_repeats": 3,
        "fsync_seconds": 1.0,
        "strace_tasks": 300,
    },
    "quick": {
        "repeats": 1,
        "b1_board": 2_000,
        "b1_window": 0.5,
        "b1_workers": [1, 2, 4, 8],
        "b2_tasks": 100,
        "b2_task_s": 0.25,
        "b2_workers": 4,
        "b2_kill_every": 3.0,
        "b2_repeats": 1,
        "lease": 2.0,
        "stall_k": 2,
        "b3_sizes": [2_000, 10_000],
        "b3_duration": 2.0,
        "b3_repeats": 1,
        "fsync_seconds": 0.5,
        "strace_tasks": 100,
    },
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
