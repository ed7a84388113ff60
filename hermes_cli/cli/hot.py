"""The bodies of the commands agents run all day (create, show, claim, heartbeat, complete, block), without click.

Each function takes the parsed options (the board slug already resolved), applies the option semantics (defaults,
checks, environment), makes its call into `hermes_cli.kanban` and returns what to print (`render.Out`). The click
commands in cli/tasks.py and the console script's fast path (hermes_cli/fast.py) both call them, so the two can
only differ in how they parse argv. Errors are raised (HermesError) before anything is written, and rendered by the
caller. Worker reports that the board cannot take are spooled here (the rules are at `report`).
Importing this module must never import click (tests/test_import_budget.py).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hermes_cli.kanban.core.errors import BoardMissing, InvalidValue, NotFound, StorageError, UsageError
from hermes_cli.kanban.core.models import Task
from hermes_cli.kanban.core.paths import resolve
from hermes_cli.kanban.core.values import check_metadata, check_priority, check_report_text, check_text, parse_duration
from hermes_cli.kanban.domain.board import DEFAULT_LEASE_S, Board
from hermes_cli.kanban.store import engine

from . import render
from .render import Out


def _spool():  # type: ignore[no-untyped-def]
    """durability/spool.py, imported when a report needs it (complete/block check their input with it, and spool
    when the board cannot take them): heartbeat, claim, create and show start faster without it."""
    from hermes_cli.kanban.durability import spool

    return spool


TASK_ID_RE = re.compile(r"t_[0-9a-f]{4,32}")
DEFAULT_TTL = f"{DEFAULT_LEASE_S:g}s"
BLOCK_KINDS = ("dependency", "needs_input", "capability", "transient")
INITIAL_STATUSES = ("running", "blocked")


# -- boards ------------------------------------------------------------------------------------------------------------
def pinned(slug: str | None) -> bool:
    return slug is None and bool(os.environ.get("HERMES_KANBAN_DB"))


@contextmanager
def open_board(slug: str | None, *, create: bool | None = None) -> Iterator[Board]:
    b = Board.open(slug, create=create)
    try:
        if b.created and pinned(slug):
            # A pinned path that did not exist becomes a new, empty board: say so, or a typo goes unnoticed.
            render.warn(f"note: created new board at {engine.describe(b.paths)['db']}")
        yield b
    finally:
        b.close()


@contextmanager
def open_worker_board(slug: str | None) -> Iterator[Board]:
    """The board of a worker-facing command (complete, block, heartbeat, request-review): never created. A pinned
    board that is gone (`boards rm` while the worker ran) raises BoardMissing (exit 4: complete/block spool)."""
    try:
        b = Board.open(slug, create=False)
    except NotFound:
        if not pinned(slug):
            raise
        db = resolve(slug).db
        raise BoardMissing(
            f"board database {db} does not exist (the board was removed or moved); a worker's command never creates "
            "a board (see: hermes kanban boards list)"
        ) from None
    try:
        yield b
    finally:
        b.close()


# -- option semantics -------------------------------------------------------------------------------------------------
def env_task_and_run(task_id: str | None, run_id: int | None) -> tuple[str, int | None]:
    """Inside a worker, the task and run come from the environment (HERMES_KANBAN_TASK / HERMES_KANBAN_RUN_ID).

    The environment's run id is used only for the environment's own task, so a worker addressing another task by
    id does not accidentally present its own fencing token for it.
    """
    env_task = os.environ.get("HERMES_KANBAN_TASK") or None
    task = task_id or env_task
    if task is None:
        raise InvalidValue("no task given: pass a task id (or run inside a worker, where HERMES_KANBAN_TASK is set)")
    if run_id is None and task == env_task:
        env_run = os.environ.get("HERMES_KANBAN_RUN_ID")
        if env_run:
            try:
                run_id = int(env_run)
            except ValueError:
                raise InvalidValue(f"HERMES_KANBAN_RUN_ID={env_run!r} is not a run id (an integer)") from None
            if not 1 <= run_id < 2**63:
                raise InvalidValue(f"invalid run id {run_id}: run ids are whole numbers from 1 to {2**63 - 1}")
    return task, run_id


def read_body(body: str | None, body_file: str | None) -> str:
    if body is not None and body_file is not None:
        raise InvalidValue("use either --body or --body-file, not both")
    if body_file is None:
        return body or ""
    try:
        if body_file == "-":
            return sys.stdin.read()
        with open(body_file, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidValue(f"cannot read --body-file {body_file}: {exc.__class__.__name__}: {exc}") from None


# -- the commands ------------------------------------------------------------------------------------------------------
def create(slug: str | None, title: str, *, body: str | None = None, body_file: str | None = None,
           priority: str = "0", parents: Sequence[str] = (), command: str | None = None, tenant: str | None = None,
           idempotency_key: str | None = None, max_runtime: str | None = None, max_retries: int | None = None,
           review: bool = False, assignee: str | None = None, created_by: str | None = None,
           skills: Sequence[str] = (), triage: bool = False, initial_status: str | None = None,
           workspace: str | None = None, branch: str | None = None, model: str | None = None,
           provider: str | None = None, scheduled_at: str | None = None) -> Out:
    if branch is not None and not (workspace or "").startswith("worktree"):
        raise UsageError("--branch only applies with --workspace worktree (or worktree:PATH)")
    text = read_body(body, body_file)
    prio = check_priority(priority)
    if created_by is None:
        created_by = os.environ.get("HERMES_PROFILE") or None
    with open_board(slug) as b:
        task, was_created = b.create_task(
            title, body=text, priority=prio, parents=tuple(parents), command=command, tenant=tenant,
            idempotency_key=idempotency_key, max_runtime=max_runtime, max_retries=max_retries, review=review,
            assignee=assignee, created_by=created_by, skills=tuple(skills), triage=triage,
            initial_status=initial_status, workspace=workspace, branch=branch, model=model, provider=provider,
            scheduled_at=scheduled_at,
        )
    return render.created(task, was_created)


def show(slug: str | None, task_id: str, *, events: int = 20) -> Out:
    with open_board(slug) as b:
        d = b.detail(task_id, events=max(0, events))
    return render.shown(d)


def claim(slug: str | None, task_id: str | None, *, ttl: str = DEFAULT_TTL, worker: str | None = None,
          tenant: str | None = None) -> Out:
    with open_board(slug) as b:
        c = b.claim(task_id, worker=worker, ttl=ttl, tenant=tenant)
    if c is None:
        raise NotFound("no ready task to claim (see: hermes kanban list --status ready)")
    return render.claimed(c)


def heartbeat(slug: str | None, task_id: str | None, *, run_id: int | None = None, ttl: str = DEFAULT_TTL,
              note: str | None = None) -> Out:
    task, run = env_task_and_run(task_id, run_id)
    if run is None:
        raise InvalidValue(f"heartbeat needs --run-id (or HERMES_KANBAN_RUN_ID) for task {task}")
    with open_worker_board(slug) as b:
        c = b.heartbeat(task, run, ttl=ttl, note=note)
    return render.heartbeat(c, note)


def complete(slug: str | None, task_ids: Sequence[str], *, run_id: int | None = None, summary: str | None = None,
             result: str | None = None, metadata: str | None = None, force: bool = False, next_: bool = False,
             ttl: str | None = None, worker: str | None = None, tenant: str | None = None) -> Out:
    if not next_ and (ttl is not None or worker is not None or tenant is not None):
        raise UsageError("--ttl, --worker and --tenant only apply with --next (complete --next claims a task)")
    if len(task_ids) > 1:
        if summary is not None or metadata is not None or run_id is not None or next_:
            raise UsageError("--summary, --metadata, --run-id and --next are per task and cannot be used with several "
                             "ids; complete the tasks one at a time, or drop them for the bulk close")
        return report_many("complete", slug, list(task_ids), result=result, force=force)
    task, run = env_task_and_run(task_ids[0] if task_ids else None, run_id)
    if not next_:
        return report("complete", slug, task, run, summary=summary, force=force, result=result, metadata=metadata)
    if run is None:
        raise UsageError(f"--next needs --run-id (or HERMES_KANBAN_RUN_ID): it is for a worker completing its own run "
                         f"of task {task}")
    if force:
        raise UsageError("--next cannot be combined with --force: it completes your own run, then claims")
    if result is not None or metadata is not None:
        raise UsageError("--next takes --summary only: complete with --result/--metadata first, then claim")
    return report_next(slug, task, run, summary=summary, ttl=ttl or DEFAULT_TTL, worker=worker, tenant=tenant)


def block(slug: str | None, task_id: str | None, reason_words: Sequence[str] = (), *, run_id: int | None = None,
          reason_opt: str | None = None, more_ids: Sequence[str] = (), kind: str | None = None,
          force: bool = False) -> Out:
    reason: str | None = " ".join(reason_words).strip() or None if reason_words else None
    if task_id is not None and not TASK_ID_RE.fullmatch(task_id) and os.environ.get("HERMES_KANBAN_TASK"):
        # a worker's `block "needs an API key"`: every word is the reason
        reason = " ".join((task_id, *reason_words)).strip() or None
        task_id = None
    if reason is not None and reason_opt is not None:
        raise InvalidValue("give the reason once: as an argument or with --reason, not both")
    reason = reason if reason is not None else reason_opt
    task, run = env_task_and_run(task_id, run_id)
    if more_ids:
        return report_many("block", slug, [task, *more_ids], summary=reason, force=force, block_kind=kind,
                           run_ids={task: run} if run is not None else None)
    return report("block", slug, task, run, summary=reason, force=force, block_kind=kind)


# -- worker reports (complete, block): the writes that must never be lost ---------------------------------------------
# If the board cannot take the report (it cannot be opened, is corrupt, read-only, locked past its retries, or the
# disk is full: any StorageError, exit 4), the report is written durably to the board's spool instead, a warning goes
# to stderr and the command exits 0 with `"spooled": true`. A board that is gone (removed while the worker ran) is
# never re-created: the report goes to the host spool under HERMES_HOME (`spool.spool_dir_for`). Domain errors
# (unknown task, fenced run: exit 1/3) are not spooled: the board answered, and the answer is no. Bad input (task id,
# run id, summary) is refused before the board is tried, with the checks the spool reader applies, so it fails the
# same way whether the board is healthy or not.
def report(kind: str, slug: str | None, task_id: str, run_id: int | None, *, summary: str | None, force: bool,
           result: str | None = None, metadata: str | None = None, block_kind: str | None = None) -> Out:
    _spool().check_report(kind, task_id, run_id, summary)  # bad input is refused before anything, and never spooled
    meta = check_metadata(metadata)
    result = check_report_text(result, "result")
    try:
        with open_worker_board(slug) as b:
            if kind == "complete":
                t = b.complete(task_id, run_id, summary=summary, force=force, result=result, metadata=meta)
                release_worktrees(b, [t])
            else:
                t = b.block(task_id, run_id, reason=summary, force=force, kind=block_kind)
    except StorageError as err:
        extra = {"result": result, "metadata": meta} if kind == "complete" else {"block_kind": block_kind}
        data = spool_report(kind, slug, task_id, run_id, summary=summary if summary is not None else result,
                            force=force, err=err, extra=extra)
        return Out(data, f"{task_id} spooled")
    return render.reported(t)


def release_worktrees(b: Board, tasks: Sequence[Task]) -> None:
    """After a completion or an archive has committed: the git worktree of a finished `--workspace worktree` task is
    removed when nothing in it can be lost, else kept, with an event saying which and why (dispatch/workspaces.py
    release; a kept one is also a warning here). Never raises: what it follows has landed. Only a worktree task
    pays for it (the module and git are not even loaded otherwise)."""
    for t in tasks:
        if not (t.workspace or "").startswith("worktree"):
            continue
        from hermes_cli.kanban.dispatch import workspaces

        out = workspaces.release(b, t)
        if out and out["kind"] == "workspace_kept":
            render.warn(f"warning: kept the git worktree of {t.id}: {out['reason']}")
        if out and out.get("note_error"):
            render.warn(f"warning: could not record what became of {t.id}'s git worktree: {out['note_error']}")


def report_many(kind: str, slug: str | None, task_ids: list[str], *, force: bool, summary: str | None = None,
                result: str | None = None, block_kind: str | None = None,
                run_ids: dict[str, int] | None = None) -> Out:
    """complete/block of several tasks (an operator's bulk close): one transaction, all or none; spooled one
    report per task when the board cannot be written."""
    runs = run_ids or {}
    for t in task_ids:
        _spool().check_report(kind, t, runs.get(t), summary)
    result = check_report_text(result, "result")
    try:
        with open_board(slug) as b:
            if kind == "complete":
                done = b.complete_many(task_ids, result=result, force=force)
                release_worktrees(b, done)
            else:
                done = b.block_many(task_ids, reason=summary, force=force, kind=block_kind, run_ids=runs)
    except StorageError as err:
        extra = {"result": result} if kind == "complete" else {"block_kind": block_kind}
        ids = list(dict.fromkeys(task_ids))
        for t in ids:
            spool_report(kind, slug, t, runs.get(t), summary=summary if summary is not None else result, force=force,
                         err=err, extra=extra)
        return Out([{"id": t, "task_id": t, "kind": kind, "spooled": True} for t in ids],
                   "\n".join(f"{t} spooled" for t in ids))
    return Out([render.task_out(t, spooled=False) for t in done], "\n".join(render.status_line(t) for t in done))


def report_next(slug: str | None, task_id: str, run_id: int, *, summary: str | None, ttl: str, worker: str | None,
                tenant: str | None) -> Out:
    """`complete --next`: the completion and the next claim in one transaction. Printed as {"completed": <what
    complete prints>, "next": <what claim prints> or null}; exit 0 either way (the completion landed). A board that
    cannot be written spools the completion exactly as `complete` does, and claims nothing."""
    _spool().check_report("complete", task_id, run_id, summary)
    lease_s = parse_duration(ttl, what="lease ttl")  # refused before the board is tried, like the report itself
    worker = check_text(worker, "worker")
    try:
        with open_worker_board(slug) as b:
            t, c = b.complete_next(task_id, run_id, summary=summary, worker=worker, ttl=lease_s, tenant=tenant)
            release_worktrees(b, [t])
    except StorageError as err:
        data = spool_report("complete", slug, task_id, run_id, summary=summary, force=False, err=err)
        return Out({"completed": data, "next": None},
                   f"{task_id} spooled\nnothing claimed: the board could not be written")
    return Out({"completed": render.task_out(t, spooled=False), "next": None if c is None else render.claim_data(c)},
               f"{render.status_line(t)}\n" + ("nothing ready to claim" if c is None else render.claim_line(c)))


def spool_report(kind: str, slug: str | None, task_id: str, run_id: int | None, *, summary: str | None, force: bool,
                 err: StorageError, extra: dict[str, Any] | None = None) -> dict[str, object]:
    """Spool the report, warn on stderr, and return what the command prints for it."""
    paths = resolve(slug)
    rep, wrote = _spool().spool_report(paths, kind, task_id, run_id, summary=summary, force=force, error=err,
                                    extra=extra)
    again = "" if wrote else " (already spooled)"
    render.warn(
        f"warning: {err.message}; the {kind} report for {task_id} was spooled to {rep.path}{again} and will be "
        f"applied when the board is healthy (see: hermes kanban reconcile-completions)"
    )
    return {"id": task_id, "task_id": task_id, "run_id": run_id, "kind": kind, "spooled": True,
            "spool_file": str(rep.path), "error": {"code": err.code, "message": err.message}}
