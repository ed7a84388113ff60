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

from typing import Any

import click

from hermes_cli.kanban.core.errors import StorageError
from hermes_cli.kanban.core.models import iso
from hermes_cli.kanban.core.paths import resolve
from hermes_cli.kanban.core.values import check_metadata, check_report_text, check_text, parse_duration
from hermes_cli.kanban.durability import spool

from .common import board_slug, emit, open_board, open_worker_board


def report(kind: str, board: str | None, task_id: str, run_id: int | None, *, summary: str | None, force: bool,
           as_json: bool, result: str | None = None, metadata: str | None = None,
           block_kind: str | None = None) -> None:
    spool.check_report(kind, task_id, run_id, summary)  # bad input is refused before anything, and never spooled
    meta = check_metadata(metadata)
    result = check_report_text(result, "result")
    try:
        with open_worker_board(board) as b:
            if kind == "complete":
                t = b.complete(task_id, run_id, summary=summary, force=force, result=result, metadata=meta)
            else:
                t = b.block(task_id, run_id, reason=summary, force=force, kind=block_kind)
    except StorageError as err:
        extra = {"result": result, "metadata": meta} if kind == "complete" else {"block_kind": block_kind}
        _spool(kind, board, task_id, run_id, summary=summary if summary is not None else result, force=force,
               as_json=as_json, err=err, extra=extra)
        return
    emit(as_json, {**t.as_dict(), "spooled": False}, f"{t.id} {t.status}")


def report_many(kind: str, board: str | None, task_ids: list[str], *, force: bool, as_json: bool,
                summary: str | None = None, result: str | None = None, block_kind: str | None = None,
                run_ids: dict[str, int] | None = None) -> None:
    """complete/block of several tasks (an operator's bulk close): one transaction, all or none; spooled one
    report per task when the board cannot be written."""
    runs = run_ids or {}
    for t in task_ids:
        spool.check_report(kind, t, runs.get(t), summary)
    result = check_report_text(result, "result")
    try:
        with open_board(board) as b:
            if kind == "complete":
                done = b.complete_many(task_ids, result=result, force=force)
            else:
                done = b.block_many(task_ids, reason=summary, force=force, kind=block_kind, run_ids=runs)
    except StorageError as err:
        extra = {"result": result} if kind == "complete" else {"block_kind": block_kind}
        for t in dict.fromkeys(task_ids):
            _spool(kind, board, t, runs.get(t), summary=summary if summary is not None else result, force=force,
                   as_json=False, err=err, extra=extra)
        emit(as_json, [{"id": t, "task_id": t, "kind": kind, "spooled": True} for t in dict.fromkeys(task_ids)])
        return
    emit(as_json, [{**t.as_dict(), "spooled": False} for t in done], "\n".join(f"{t.id} {t.status}" for t in done))


def report_next(board: str | None, task_id: str, run_id: int, *, summary: str | None, ttl: str, worker: str | None,
                tenant: str | None, as_json: bool) -> None:
    """`complete --next`: the completion and the next claim in one transaction. Printed as {"completed": <what
    complete prints>, "next": <what claim prints> or null}; exit 0 either way (the completion landed). A board that
    cannot be written spools the completion exactly as `complete` does, and claims nothing."""
    spool.check_report("complete", task_id, run_id, summary)
    lease_s = parse_duration(ttl, what="lease ttl")  # refused before the board is tried, like the report itself
    worker = check_text(worker, "worker")
    try:
        with open_worker_board(board) as b:
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
           as_json: bool | None, err: StorageError, extra: dict[str, Any] | None = None) -> dict[str, object]:
    """Spool the report and warn on stderr; print the result unless `as_json` is None (the caller prints it)."""
    paths = resolve(board_slug(board))
    rep, wrote = spool.spool_report(paths, kind, task_id, run_id, summary=summary, force=force, error=err,
                                    extra=extra)
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
