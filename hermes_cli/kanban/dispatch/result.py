"""What a dispatcher run returns: why it stopped (StopReason) and what it did (DispatchResult, for the CLI's
summary and --json)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..core.errors import HermesError
from ..core.models import iso
from .lease import DispatcherLease


class StopReason(StrEnum):
    IDLE = "idle"  #: --until-idle: nothing ready, running or waiting for a retry
    ONCE = "once"  #: --once: the pass's workers have finished
    PASS = "pass"  #: one pass (`dispatch`): reclaimed, started what could start, returned (workers left running)
    TIMEOUT = "timeout"  #: --timeout reached
    SIGNAL = "signal"  #: SIGINT/SIGTERM
    LEASE_LOST = "lease_lost"  #: another dispatcher holds the board now
    STORAGE = "storage_error"  #: the board's storage is unhealthy
    SKIPPED = "skipped"  #: another dispatcher held the lease; nothing was done


@dataclass
class DispatchResult:
    board: str
    reason: StopReason | None = None
    message: str = ""
    epoch: int | None = None
    holder: DispatcherLease | None = None
    took_over_from: DispatcherLease | None = None
    broke_lock: DispatcherLease | None = None
    started_at: float = field(default_factory=time.time)
    stopped_at: float | None = None
    counts: Counter[str] = field(default_factory=Counter)
    left_running: list[dict[str, Any]] = field(default_factory=list)
    #: the workers started by a one pass (`dispatch`), with what they run and where
    started: list[dict[str, Any]] = field(default_factory=list)
    #: ready tasks not started because their assignee has no profile command (`task_id`, `assignee`, `reason`)
    skipped_nonspawnable: list[dict[str, Any]] = field(default_factory=list)
    error: HermesError | None = None

    @property
    def skipped(self) -> bool:
        return self.reason == StopReason.SKIPPED

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    def as_dict(self) -> dict[str, Any]:
        keys = ("spawned", "completed", "reported", "crashed", "timed_out", "reclaimed", "spawn_failed", "gave_up",
                "adopted", "backups", "backup_failed")
        return {
            "board": self.board,
            "skipped": self.skipped,
            "reason": None if self.reason is None else str(self.reason),
            "message": self.message,
            "epoch": self.epoch,
            "holder": None if self.holder is None else self.holder.as_dict(),
            "took_over_from": None if self.took_over_from is None else self.took_over_from.as_dict(),
            "broke_lock": None if self.broke_lock is None else self.broke_lock.as_dict(),
            "started_at": iso(self.started_at),
            "stopped_at": iso(self.stopped_at),
            "duration_s": None if self.stopped_at is None else round(self.stopped_at - self.started_at, 3),
            **{k: self.counts.get(k, 0) for k in keys},
            "left_running": self.left_running,
            "started": self.started,
            "skipped_nonspawnable": self.skipped_nonspawnable,
            "error": None if self.error is None else {"code": self.error.code, "message": self.error.message},
        }

    def human(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        """The text summary, line by line (a renderer may escape each line: they quote host names and task data)."""
        if self.skipped:
            return [self.message]
        c = self.counts
        parts = [f"spawned {c['spawned']}", f"completed {c['completed']}", f"reported {c['reported']}",
                 f"crashed {c['crashed']}", f"timed out {c['timed_out']}", f"reclaimed {c['reclaimed']}",
                 f"gave up {c['gave_up']}"]
        if c["spawn_failed"]:
            parts.append(f"spawn failed {c['spawn_failed']}")
        if c["adopted"]:
            parts.append(f"adopted {c['adopted']}")
        if c["backups"]:
            parts.append(f"backups {c['backups']}")
        if c["backup_failed"]:
            parts.append(f"backup failed {c['backup_failed']}")
        took = self.stopped_at - self.started_at if self.stopped_at else 0.0
        lines = [f"dispatch {self.board}: stopped ({self.reason}) after {took:.1f}s: " + ", ".join(parts)]
        if self.broke_lock is not None:
            lines.append(f"broke the stale lease of {self.broke_lock.describe()}")
        if self.reason == StopReason.PASS:
            for w in self.started:
                lines.append(f"started: {w['task_id']} run {w['run_id']} pid {w['pid']} in {w['workspace']}")
            for k in self.skipped_nonspawnable:
                lines.append(f"not started: {k['task_id']} (assignee {k['assignee']} has no worker command)")
            return lines
        for w in self.left_running:
            lines.append(f"left running: {w['task_id']} run {w['run_id']} pid {w['pid']} (the next dispatcher "
                         "adopts it; otherwise its lease expires and the task is reclaimed)")
        return lines
