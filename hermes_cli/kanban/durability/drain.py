"""The dispatcher's per-tick spool drain: apply spooled reports when the board is healthy (doctor's quick health,
then reconcile). Its own module because it sits above both doctor and reconcile."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import HermesError, StorageError
from ..store.tasks import last_event_id
from . import doctor as health
from . import reconcile, spool

if TYPE_CHECKING:
    import logging

    from ..domain.board import Board


def drain_if_healthy(board: Board, log: Callable[[str], None] | None = None) -> int:
    """Apply the spool when there is one and the board is healthy. Returns how many reports were applied.

    For the dispatcher's per-tick maintenance: a directory scan when the spool is empty; otherwise a quick health
    check, then `reconcile.apply` (verified backup, quick_check before and after, one transaction). A board that is
    not healthy, or a storage error while applying, leaves the spool as it is (doctor reports the backlog).

    Never raises a HermesError or OSError: whatever goes wrong is logged (`log`, else this module's logger) and the
    reports stay spooled. The dispatcher's loop must not die over the spool.
    """
    say = log if log is not None else _logger().warning
    key = str(board.paths.db)
    state: tuple[int, int] | None = None
    try:
        if spool.backlog(board.paths) == 0:
            return 0
        # Reports that could not apply last time (conflict, review gate, unknown task) are not re-read every tick:
        # only when the spool or the board changed since.
        state = (_mtime_ns(board.paths.spool_dir) + _mtime_ns(board.paths.host_spool_dir), last_event_id(board.db))
        if _NOTHING_TO_DRAIN.get(key) == state:
            return 0
        if not health.quick_health(board).ok:
            return 0
        result = reconcile.apply(board)
    except (StorageError, OSError) as exc:
        # The board went unhealthy between the check and the apply: the reports stay spooled, nothing is lost, and
        # the next tick tries again.
        say(f"warning: the spool of board {board.slug} was not applied: {_describe(exc)}")
        return 0
    except HermesError as exc:
        # Not the storage: something in the spool or the board this drain cannot settle (e.g. a conflict while
        # taking the backup). Logged once per spool/board state, then left to `reconcile-completions`.
        say(f"warning: the spool of board {board.slug} was not applied: {exc.message} "
            f"(see: hermes kanban reconcile-completions)")
        if state is not None:
            _NOTHING_TO_DRAIN[key] = state
        return 0
    for bad in result.invalid:
        say(f"warning: {bad['file']} is not a valid report ({bad['problem']}); moved to {bad.get('moved_to')}")
    if result.applied == 0 and state is not None:
        _NOTHING_TO_DRAIN[key] = state
    return result.applied


def _mtime_ns(d: Path) -> int:
    try:
        return os.stat(d).st_mtime_ns
    except FileNotFoundError:
        return 0  # no such spool (yet)


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, HermesError) else f"{exc.__class__.__name__}: {exc}"



def _logger() -> logging.Logger:
    import logging  # here, not at the top: the worker commands that import this module never log

    return logging.getLogger(__name__)


#: per board: (spool dir mtime, last event id) when a drain last found nothing it could apply
_NOTHING_TO_DRAIN: dict[str, tuple[int, int]] = {}
