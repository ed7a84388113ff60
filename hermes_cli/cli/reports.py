"""Worker reports (complete, block): the writes that must never be lost.

If the board cannot take the report — it cannot be opened, is corrupt, read-only, locked past its retries, or the
disk is full (any StorageError, exit 4) — the report is written durably to the board's spool instead, a warning goes
to stderr and the command exits 0 with `"spooled": true`. A board that is gone (removed while the worker ran) is
never re-created: the report goes to the host spool under HERMES_HOME (`spool.spool_dir_for`). Domain errors
(unknown task, fenced run: exit 1/3) are not spooled: the board answered, and the answer is no. Bad input (task id,
run id, summary) is refused before the board is tried, with the checks the spool reader applies, so it fails the
same way whether the board is healthy or not.
"""

from __future__ import annotations

import click

from ..kanban import spool
from ..kanban.errors import StorageError
from ..kanban.paths import resolve
from .common import board_slug, emit, open_worker_board


def report(kind: str, board: str | None, task_id: str, run_id: int | None, *, summary: str | None, force: bool,
           as_json: bool) -> None:
    spool.check_report(kind, task_id, run_id, summary)  # bad input is refused before anything, and never spooled
    try:
        with open_worker_board(board) as b:
            if kind == "complete":
                t = b.complete(task_id, run_id, summary=summary, force=force)
            else:
                t = b.block(task_id, run_id, reason=summary, force=force)
    except StorageError as err:
        _spool(kind, board, task_id, run_id, summary=summary, force=force, as_json=as_json, err=err)
        return
    emit(as_json, {**t.as_dict(), "spooled": False}, f"{t.id} {t.status}")


def _spool(kind: str, board: str | None, task_id: str, run_id: int | None, *, summary: str | None, force: bool,
           as_json: bool, err: StorageError) -> None:
    paths = resolve(board_slug(board))
    rep, wrote = spool.spool_report(paths, kind, task_id, run_id, summary=summary, force=force, error=err)
    again = "" if wrote else " (already spooled)"
    click.echo(
        f"warning: {err.message}; the {kind} report for {task_id} was spooled to {rep.path}{again} and will be "
        f"applied when the board is healthy (see: hermes kanban reconcile-completions)",
        err=True,
    )
    emit(as_json, {"id": task_id, "task_id": task_id, "run_id": run_id, "kind": kind, "spooled": True,
                   "spool_file": str(rep.path), "error": {"code": err.code, "message": err.message}},
         f"{task_id} spooled")
