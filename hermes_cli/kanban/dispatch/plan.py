"""`hermes kanban dispatch --dry-run`: what one pass would do now, read without a single write (no lease taken, no
claim, no event), using the pass's own selection (selection.py) and budget rules.

A pass adopts the workers of this host that still run (they count against max_spawn), reclaims the other runs whose
lease expired, then starts the best ready tasks up to `max_spawn` running (and at most `--max`). The preview is of
this moment: another process may change the board before a real pass runs.
"""

from __future__ import annotations

import time
from typing import Any

from ..core import procs
from ..core.models import iso
from ..domain.board import Board
from ..domain.config import DispatchSettings
from ..domain.workspaces import where
from ..store import tasks as tsql
from . import lease as leases
from .selection import Selection


def plan_pass(board: Board, settings: DispatchSettings, *, limit: int | None) -> dict[str, Any]:
    """The preview of one pass (see the module docstring), as the JSON `dispatch --dry-run --json` prints."""
    now = time.time()
    selection = Selection(settings)
    workdir = board.settings().get("default_workdir")  # its own read: before the snapshot below
    with board.db.read():
        holder = leases.read_lease(board)
        held = holder is not None and not holder.is_mine() and leases.keeps_others_out(holder,
                                                                                      grace=settings.lease_grace)
        alive: set[int] = set()  # open runs whose worker runs on this host: a pass adopts them
        for run in board.open_runs():
            if run.host == procs.HOST and run.pid is not None and run.pid_create_time is not None \
                    and procs.state(run.pid, run.pid_create_time) != procs.ProcState.DEAD:
                alive.add(run.id)
        reclaim = [t for t in tsql.expired_running(board.db, now) if t.current_run_id not in alive]
        budget = max(0, settings.max_spawn - len(alive))
        if limit is not None:
            budget = min(budget, limit)
        ids = selection.dispatchable(board.db, now, limit=budget) if budget else []
        start = [board.get_task(i) for i in ids]
        unstartable = selection.unstartable(board.db)
    config = str(board.paths.config_file)
    return {
        "board": board.slug,
        "dry_run": True,
        "skipped": held,
        "holder": None if holder is None else holder.as_dict(),
        "message": f"skipped: lease held by {holder.describe()}" if held and holder is not None else "",
        "at": iso(now),
        "running_here": len(alive),
        "max_spawn": settings.max_spawn,
        "would_start": [] if held else [
            {"task_id": t.id, "title": t.title, "assignee": t.assignee, "priority": t.priority,
             "attempt": t.attempts + 1, "command": selection.command_for(t),
             "workspace": str(where(board.paths, t, workdir).path)} for t in start],
        "would_reclaim": [] if held else [{"task_id": t.id, "run_id": t.current_run_id} for t in reclaim],
        "would_skip": [] if held else [{"task_id": i, "assignee": a, "reason": selection.skip_reason(a, config)}
                                       for i, a in unstartable],
    }


def plan_lines(plan: dict[str, Any]) -> list[str]:
    """The text form of a preview, one line each (a renderer escapes them: they quote task titles)."""
    if plan["skipped"]:
        return [f"dispatch {plan['board']} --dry-run: {plan['message']}; a pass now would do nothing"]
    lines = [f"dispatch {plan['board']} --dry-run: would start {len(plan['would_start'])}, would reclaim "
             f"{len(plan['would_reclaim'])} ({plan['running_here']} of max {plan['max_spawn']} running here); "
             "nothing was changed"]
    lines += [f"would start: {w['task_id']} {w['title']!r} -> {w['command']} (in {w['workspace']})"
              for w in plan["would_start"]]
    lines += [f"would reclaim: {r['task_id']} run {r['run_id']} (lease expired)" for r in plan["would_reclaim"]]
    lines += [f"would skip: {k['task_id']}: {k['reason']}" for k in plan["would_skip"]]
    return lines
