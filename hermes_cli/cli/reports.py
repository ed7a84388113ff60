"""Worker reports (complete, block): the writes that must never be lost.

If the board cannot take the report — it cannot be opened, is corrupt, read-only, locked past its retries, or the
disk is full (any StorageError, exit 4) — the report is written durably to the board's spool instead, a warning goes
to stderr and the command exits 0 with `"spooled": true`. Domain errors (unknown task, fenced run: exit 1/3) are not
spooled: the board answered, and the answer is no. Bad input (task id, run id, summary) is refused before the board
is tried, with the checks the spool reader applies, so it fails the same way whether the board is healthy or not.
"""

from __future__ import annotations

import click

from ..kanban import spool
from ..kanban.errors import StorageError
from ..kanban.models import iso
from ..kanban.paths import resolve
from ..kanban.values import check_text, parse_duration
from .common import board_slug, emit, open_board


def report(kind: str, board: str | None, task_id: str, run_id: int | None, *, summary: str | None, force: bool,
           as_json: bool) -> None:
    spool.check_report(kind, task_id, run_id, summary)  # bad input is refused before anything, and never spooled
    try:
        with open_board(board) as b:
            if kind == "complete":
                t = b.complete(task_id, run_id, summary=summary, force=force)
            else:
                t = b.block(task_id, run_id, reason=summary, force=force)
    except StorageError as err:
        _spool(kind, board, task_id, run_id, summary=summary, force=force, as_json=as_json, err=err)
        return
    emit(as_json, {**t.as_dict(), "spooled": False}, f"{t.id} {t.status}")


def report_next(board: str | None, task_id: str, run_id: int, *, summary: str | None, ttl: str, worker: str | None,
                tenant: str | None, as_json: bool) -> None:
    """`complete --next`: the completion and the next claim in one transaction. Printed as {"completed": <what
    complete prints>, "next": <what claim prints> or null}; exit 0 either way (the completion landed). A board that
    cannot be written spools the completion exactly as `complete` does, and claims nothing."""
    spool.check_report("complete", task_id, run_id, summary)
    lease_s = parse_duration(ttl, what="lease ttl")  # refused before the board is tried, like the report itself
    worker = check_text(worker, "worker")
    try:
        with open_board(board) as b:
            t, claim = b.complete_next(task_id, run_id, summary=summary, worker=worker, ttl=lease_s, tenant=tenant)
    except StorageError as err:
        data = _spool("complete", board, task_id, run_id, summary=summary, force=False, as_json=None, err=err)
        emit(as_json, {"completed": data, "next": None},
             f"{task_id} spooled\nnothing claimed: the board could not be written")
        return
    nxt = None if claim is None else {
        "task_id": claim.task_id, "run_id": claim.run_id, "lease_expires_at": iso(claim.lease_expires_at),
        "attempt": claim.attempt,
    }
    emit(as_json, {"completed": {**t.as_dict(), "spooled": False}, "next": nxt},
         f"{t.id} {t.status}\n" + ("nothing ready to claim" if claim is None else
                                   f"{claim.task_id} run {claim.run_id} lease until {iso(claim.lease_expires_at)}"))


def _spool(kind: str, board: str | None, task_id: str, run_id: int | None, *, summary: str | None, force: bool,
           as_json: bool | None, err: StorageError) -> dict[str, object]:
    """Spool the report and warn on stderr; print the result unless `as_json` is None (the caller prints it)."""
    paths = resolve(board_slug(board))
    rep, wrote = spool.spool_report(paths, kind, task_id, run_id, summary=summary, force=force, error=err)
    again = "" if wrote else " (already spooled)"
    click.echo(
        f"warning: {err.message}; the {kind} report for {task_id} was spooled to {rep.path}{again} and will be "
        f"applied when the board is healthy (see: hermes kanban reconcile-completions)",
        err=True,
    )
    data: dict[str, object] = {"id": task_id, "task_id": task_id, "run_id": run_id, "kind": kind, "spooled": True,
                               "spool_file": str(rep.path), "error": {"code": err.code, "message": err.message}}
    if as_json is not None:
        emit(as_json, data, f"{task_id} spooled")
    return data
