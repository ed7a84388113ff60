"""Single-flight per (board, hub): a lease row in the hub with its holder (host, pid, start time) and a last-refresh
heartbeat, judged by the hub's clock.

A sync takes the lease when it is free, or over when the holder's last refresh is older than GRACE_S, or when the
holder runs on this host and is provably gone (its pid is dead or belongs to another process). Otherwise the sync
is skipped (exit 0: a cron collision is not a failure). `--break-lock --max-age S` frees a lease only when its last
refresh is older than S, never by the time it was acquired.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import procs
from ..store.hub import writes
from ..store.hub.link import HubLink
from ..store.hub.writes import LeaseRow

#: a holder not refreshed for this long is stale and may be taken over
GRACE_S = 30.0
#: the holder refreshes at least this often (every batch refreshes it too)
REFRESH_S = 5.0


@dataclass(frozen=True, slots=True)
class Acquired:
    token: int | None  #: our token; None: skipped, `holder` holds it
    holder: LeaseRow | None  #: the holder we collided with, or the one we took over from
    took_over: str | None = None  #: "stale" or "dead" when we took it over

    @property
    def skipped(self) -> bool:
        return self.token is None


def acquire(link: HubLink, board_id: str) -> Acquired:
    host, pid, started = procs.identity()
    with link.transaction():
        row = writes.lock_lease(link, board_id)
        why = None
        if row.held:
            mine = row.holder_host == host and row.holder_pid == pid and procs.same_start(row.holder_started, started)
            if not mine:
                if row.age is not None and row.age > GRACE_S:
                    why = "stale"
                elif row.holder_host == host and row.holder_pid is not None and \
                        procs.state(int(row.holder_pid), row.holder_started) == procs.ProcState.DEAD:
                    why = "dead"
                else:
                    return Acquired(None, row)
        token = writes.take_lease(link, board_id, host, pid, started)
    return Acquired(token, row if why else None, why)


def break_lock(link: HubLink, board_id: str, max_age: float) -> tuple[LeaseRow | None, LeaseRow | None]:
    """Free the lease if its last refresh is older than `max_age` seconds. Returns (freed, kept): the lease removed,
    or the live one left in place (both None when nobody held it)."""
    with link.transaction():
        row = writes.lock_lease(link, board_id)
        if not row.held:
            return None, None
        if row.age is not None and row.age > max_age:
            writes.free_lease(link, board_id)
            return row, None
        return None, row
