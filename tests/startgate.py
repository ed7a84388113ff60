"""Start worker processes at the same instant: each prints `ready` once set up and waits for `go` on stdin."""

from __future__ import annotations

import subprocess


def release_together(procs: list[subprocess.Popen[str]]) -> None:
    """Wait until every process said `ready`, then tell them all `go` (so set-up time is not part of a race)."""
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
