"""The verbs hermes-agent users already type: assign, reassign, set-model, reclaim, assignees, promote, edit, runs,
log, tail, watch, context, diagnostics, gc. Loaded on first use (common.LAZY_COMMANDS)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from hermes_cli.kanban.core.errors import NotFound, Unsupported, UsageError
from hermes_cli.kanban.core.models import Event, Run, Task, iso
from hermes_cli.kanban.core.values import profile_or_none
from hermes_cli.kanban.domain.board import Board

from . import hot, render
from .common import board_slug, command, common, emit, kanban, open_board
from .greedy import GreedyCommand


def _task_out(t: Task, **extra: object) -> dict[str, object]:
    return {**t.as_dict(), **extra}


# -- assignees ---------------------------------------------------------------------------------------------------------
@command("assign")
@click.argument("task_id")
@click.argument("profile")
@common
def kanban_assign(task_id: str, profile: str, board: str | None, as_json: bool) -> None:
    """Assign a task to a profile (`none`, `-` or `null` unassigns). A running task is moved with
    `reassign --reclaim`.

    Example:

    \b
        hermes kanban assign t_3fa2b1c4d5e6 researcher
    """
    who = profile_or_none(profile)
    with open_board(board) as b:
        t = b.assign(task_id, who)
    emit(as_json, _task_out(t), f"{t.id} assigned to {t.assignee or '(nobody)'}")


@command("reassign")
@click.argument("task_id")
@click.argument("profile")
@click.option("--reclaim", is_flag=True, help="Free a running task first (its worker's reports are then refused).")
@click.option("--reason", default=None, help="Why (kept on the events).")
@common
def kanban_reassign(task_id: str, profile: str, reclaim: bool, reason: str | None, board: str | None,
                    as_json: bool) -> None:
    """Move a task to another profile; a running one needs --reclaim.

    Example:

    \b
        hermes kanban reassign t_3fa2b1c4d5e6 writer --reclaim --reason "researcher is stuck"
    """
    who = profile_or_none(profile)
    with open_board(board) as b:
        t = b.reassign(task_id, who, reclaim=reclaim, reason=reason)
    emit(as_json, _task_out(t), f"{t.id} assigned to {t.assignee or '(nobody)'} ({t.status})")


@command("set-model")
@click.argument("task_id")
@click.argument("model", required=False)
@click.option("--provider", default=None, metavar="P", help="The model's provider (HERMES_KANBAN_PROVIDER).")
@common
def kanban_set_model(task_id: str, model: str | None, provider: str | None, board: str | None,
                     as_json: bool) -> None:
    """Set a task's model override (`none`, `-` or `null`, or no MODEL, clears it). Its next worker gets it as
    HERMES_KANBAN_MODEL (and HERMES_KANBAN_PROVIDER); the worker's command decides what to do with it.

    Example:

    \b
        hermes kanban set-model t_3fa2b1c4d5e6 claude-opus-4.6 --provider anthropic
        hermes kanban set-model t_3fa2b1c4d5e6 none
    """
    chosen = None if model is None or model.strip().lower() in ("none", "-", "null", "") else model
    with open_board(board) as b:
        t, override = b.set_model(task_id, chosen, provider)
    label = "cleared" if override["model"] is None else (
        f"{override['provider']}:{override['model']}" if override["provider"] else override["model"])
    emit(as_json, _task_out(t, model=override["model"], provider=override["provider"]),
         f"{t.id} model override {label} (its next worker gets it)")


@command("reclaim")
@click.argument("task_id")
@click.option("--reason", default=None, help="Why (kept on the run and its event).")
@common
def kanban_reclaim(task_id: str, reason: str | None, board: str | None, as_json: bool) -> None:
    """Free a running task: its run is closed as reclaimed, its worker's later reports are refused (exit 3) and a
    dispatcher supervising it stops it; the task is ready again with a fresh retry budget.

    Example:

    \b
        hermes kanban reclaim t_3fa2b1c4d5e6 --reason "worker wedged"
    """
    with open_board(board) as b:
        t = b.reclaim(task_id, reason=reason)
    emit(as_json, _task_out(t), f"{t.id} {t.status}")


@command("assignees")
@common
def kanban_assignees(board: str | None, as_json: bool) -> None:
    """Every assignee on the board with its task counts by status (archived tasks not counted).

    Example:

    \b
        hermes kanban assignees --json
    """
    with open_board(board) as b:
        rows = b.assignees()

    def human() -> str:
        if not rows:
            return "no tasks"
        return "\n".join(
            f"{r['name'] or '(unassigned)':<20} {r['total']:>4}  "
            + "  ".join(f"{k} {v}" for k, v in r["counts"].items())
            for r in rows
        )

    emit(as_json, rows, human)


# -- lifecycle ---------------------------------------------------------------------------------------------------------
@command("promote", cls=GreedyCommand, greedy=("--ids",))
@click.argument("task_id")
@click.argument("reason_words", nargs=-1)
@click.option("--ids", "more_ids", multiple=True, metavar="ID...", help="More tasks to promote.")
@click.option("--force", is_flag=True, help="Promote even while parents are unfinished.")
@click.option("--dry-run", is_flag=True, help="Check only; nothing changes.")
@common
def kanban_promote(task_id: str, reason_words: tuple[str, ...], more_ids: tuple[str, ...], force: bool,
                   dry_run: bool, board: str | None, as_json: bool) -> None:
    """Move todo, blocked or triage tasks to ready (several: all or none). Unfinished parents need --force.

    Example:

    \b
        hermes kanban promote t_3fa2b1c4d5e6 --dry-run
    """
    reason = " ".join(reason_words).strip() or None
    ids = [task_id, *more_ids]
    with open_board(board) as b:
        tasks = b.promote(ids, force=force, dry_run=dry_run, reason=reason)
    results = [{"task_id": t.id, "promoted": True, "dry_run": dry_run, "reason": reason, "error": None,
                "status": "ready" if not dry_run else str(t.status)} for t in tasks]
    label = "would promote" if dry_run else "promoted"
    emit(as_json, results[0] if len(results) == 1 else results,
         "\n".join(f"{r['task_id']} {label} -> ready" for r in results))


@command("edit")
@click.argument("task_id")
@click.option("--title", default=None)
@click.option("--body", default=None)
@click.option("--priority", default=None, metavar="N")
@click.option("--result", default=None, metavar="TEXT", help="Backfill the result of a done task.")
@click.option("--summary", default=None, help="With --result: its summary.")
@click.option("--metadata", default=None, metavar="JSON", help="With --result: a JSON object of facts.")
@common
def kanban_edit(task_id: str, title: str | None, body: str | None, priority: str | None, result: str | None,
                summary: str | None, metadata: str | None, board: str | None, as_json: bool) -> None:
    """Change a task's title, body or priority, or backfill the result of a done task.

    Example:

    \b
        hermes kanban edit t_3fa2b1c4d5e6 --title "summarise the nginx logs" --priority 7
    """
    with open_board(board) as b:
        t = b.edit(task_id, title=title, body=body, priority=priority, result=result, summary=summary,
                   metadata=metadata)
    emit(as_json, _task_out(t), f"{t.id} edited")


@command("gc")
@click.option("--event-retention-days", type=float, default=30, show_default=True, metavar="N",
              help="Delete events older than N days of finished tasks.")
@click.option("--log-retention-days", type=float, default=30, show_default=True, metavar="N",
              help="Delete worker logs not written for N days (not of running tasks).")
@common
def kanban_gc(event_retention_days: float, log_retention_days: float, board: str | None, as_json: bool) -> None:
    """Delete old events of finished tasks and old worker logs. Events a subscription has not consumed yet, and
    events of tasks still in play, are never deleted.

    Example:

    \b
        hermes kanban gc --event-retention-days 7 --log-retention-days 14
    """
    with open_board(board) as b:
        out = b.gc(event_retention_days=event_retention_days, log_retention_days=log_retention_days)
    emit(as_json, out, f"gc: {out['events_removed']} event(s), {out['logs_removed']} log file(s) removed")


@command("reopen-review")
@click.argument("task_id")
@click.option("--reason", default=None, help="Why (kept as a comment).")
@common
def kanban_reopen_review(task_id: str, reason: str | None, board: str | None, as_json: bool) -> None:
    """Send a task in review back to ready (or todo while parents are unfinished), as hermes-agent's reopen-review;
    the same as request-changes, with the reason optional.

    Example:

    \b
        hermes kanban reopen-review t_3fa2b1c4d5e6 --reason "needs another pass"
    """
    with open_board(board) as b:
        t = b.request_changes(task_id, reason=reason or "review reopened")
    emit(as_json, _task_out(t), f"{t.id} {t.status}")


@command("schedule", cls=GreedyCommand, greedy=("--ids",))
@click.argument("task_id")
@click.argument("reason_words", nargs=-1)
@click.option("--ids", "more_ids", multiple=True, metavar="ID...", help="More tasks to park with the same reason.")
@common
def kanban_schedule(task_id: str, reason_words: tuple[str, ...], more_ids: tuple[str, ...], board: str | None,
                    as_json: bool) -> None:
    """Park a task until a person unblocks it (hermes-agent's schedule). There is no separate `scheduled` status
    here: the task is blocked with the reason, and `unblock` releases it, as it releases a scheduled task upstream.

    Example:

    \b
        hermes kanban schedule t_3fa2b1c4d5e6 "waiting for the vendor maintenance window"
    """
    hot.block(board_slug(board), task_id, reason_words, more_ids=more_ids).emit(as_json)


# -- views -------------------------------------------------------------------------------------------------------------
def _run_line(r: Run, now: float) -> str:
    end = r.ended_at if r.ended_at is not None else now
    took = max(0.0, end - r.started_at)
    outcome = str(r.outcome) if r.outcome else "(running)"
    line = f"#{r.id:<5} {outcome:<17} {r.worker or '-':<16} {took:>8.1f}s  {iso(r.started_at)}"
    extra = [f"     -> {r.summary}"] if r.summary else []
    if r.result is not None and r.result != r.summary:
        extra.append(f"     result: {r.result}")
    if r.metadata:
        extra.append(f"     metadata: {json.dumps(r.metadata, ensure_ascii=False, sort_keys=True)}")
    return "\n".join([line, *extra])


@command("runs")
@click.argument("task_id")
@common
def kanban_runs(task_id: str, board: str | None, as_json: bool) -> None:
    """A task's attempts, oldest first: outcome, worker, time taken, summary, result and metadata.

    Example:

    \b
        hermes kanban runs t_3fa2b1c4d5e6 --json
    """
    with open_board(board) as b:
        runs = b.runs(task_id)
    now = time.time()
    emit(as_json, [r.as_dict() for r in runs],
         lambda: "\n".join(_run_line(r, now) for r in runs) if runs else f"no runs yet for {task_id}")


@command("log")
@click.argument("task_id")
@click.option("--tail", "tail_bytes", type=click.IntRange(1), default=None, metavar="BYTES",
              help="Only the last BYTES bytes.")
@common
def kanban_log(task_id: str, tail_bytes: int | None, board: str | None, as_json: bool) -> None:
    """Print the worker log of a task (`<board>/logs/<task>.log`).

    Example:

    \b
        hermes kanban log t_3fa2b1c4d5e6 --tail 4000
    """
    with open_board(board) as b:
        text = b.read_log(task_id, tail_bytes)  # an unknown task raises NotFound
        path = str(b.paths.logs_dir / f"{task_id}.log")
    if text is None:
        # a task that never ran has an empty log, as in hermes-agent (scripts tail it right after create)
        render.warn(f"note: no log for task {task_id} yet: it has not run under a dispatcher "
                    f"(see: hermes kanban runs {task_id})")
    if as_json:
        emit(True, {"task_id": task_id, "path": path, "log": text or "", "exists": text is not None})
        return
    if not text:
        return
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


@command("context")
@click.argument("task_id")
@common
def kanban_context(task_id: str, board: str | None, as_json: bool) -> None:
    """What a worker of this task sees: the task, its parents' results, its comments and its environment.

    Example:

    \b
        hermes kanban context t_3fa2b1c4d5e6
    """
    with open_board(board) as b:
        ctx = b.context(task_id)
    emit(as_json, ctx, lambda: _render_context(ctx))


def _render_context(ctx: dict[str, Any]) -> str:
    t = ctx["task"]
    lines = [f"# {t['title']}", "", f"task {t['id']}  status {t['status']}  priority {t['priority']}"
             + (f"  assignee {t['assignee']}" if t["assignee"] else "")
             + (f"  tenant {t['tenant']}" if t["tenant"] else "")]
    if t["skills"]:
        lines.append(f"skills: {', '.join(t['skills'])}")
    if t["body"]:
        lines += ["", t["body"].rstrip("\n")]
    if ctx["parents"]:
        lines += ["", "## parents"]
        for p in ctx["parents"]:
            lines.append(f"- {p['id']} {p['title']} ({p['status']})")
            if p["result"] is not None:
                lines.append(f"  result: {p['result']}")
            if p["summary"] is not None and p["summary"] != p["result"]:
                lines.append(f"  summary: {p['summary']}")
            if p["metadata"]:
                lines.append(f"  metadata: {json.dumps(p['metadata'], ensure_ascii=False, sort_keys=True)}")
    if ctx["comments"]:
        lines += ["", "## comments"]
        lines += [f"- {c['created_at']} {c['author'] or '-'}: {c['body']}" for c in ctx["comments"]]
    lines += ["", "## environment"]
    lines += [f"{k}={v if v is not None else '(set when a run starts)'}" for k, v in ctx["environment"].items()]
    return "\n".join(lines)


@command("diagnostics")
@click.option("--severity", type=click.Choice(["warning", "error", "critical"]), default=None,
              help="Only this severity and above.")
@click.option("--task", "task_id", default=None, metavar="ID", help="Only this task.")
@click.option("--ready-wait", default="1h", show_default=True, metavar="DUR",
              help="A ready task waiting this long counts as stuck.")
@common
def kanban_diagnostics(severity: str | None, task_id: str | None, ready_wait: str, board: str | None,
                       as_json: bool) -> None:
    """Tasks that need a person: stranded (lease expired), stuck (ready too long, blocked, waiting on a blocked
    parent, in triage) and looping (failing or blocked again and again), each with the next command to run.
    `diag` is the same command.

    Example:

    \b
        hermes kanban diagnostics --severity error --json
    """
    from hermes_cli.kanban.core.values import parse_duration

    wait = parse_duration(ready_wait, what="--ready-wait")
    with open_board(board) as b:
        found = b.diagnostics(task_id, severity=severity, ready_wait_s=wait)

    def human() -> str:
        if not found:
            return "no diagnostics: nothing needs a person"
        return "\n".join(f"{d['severity']:<8} {d['task_id']}  {d['kind']}: {d['message']}\n         next: {d['next']}"
                         for d in found)

    emit(as_json, found, human)


# -- following ---------------------------------------------------------------------------------------------------------
def _follow_filtered(b: Board, *, keep: Any, kinds: list[str] | None, timeout: float | None, limit: int | None,
                     as_json: bool, after: int | None) -> None:
    """The `events --follow` reader (doorbell-woken), printing only events `keep(event)` accepts."""
    from hermes_cli.kanban.live.readers import RECHECK_S, EventReader

    from .events import graceful_stop, write_batch  # here: only the followers load the event streaming code

    deadline = None if timeout is None else time.monotonic() + timeout
    printed = 0
    with EventReader(b, name="watch", after=after, kinds=kinds) as reader, graceful_stop(reader) as stopping:
        while not stopping() and (limit is None or printed < limit):
            wait = RECHECK_S if deadline is None else min(RECHECK_S, deadline - time.monotonic())
            if wait <= 0:
                break
            evs = [e for e in reader.wait(timeout=wait) if keep(e)]
            if limit is not None:
                evs = evs[: limit - printed]
            if evs:
                if not write_batch(evs, as_json):
                    return
                printed += len(evs)


def _check_follow(timeout: float | None, limit: int | None) -> None:
    if timeout is not None and timeout <= 0:
        raise UsageError(f"invalid --timeout {timeout}: must be more than 0 seconds")
    if limit is not None and limit < 0:
        raise UsageError(f"invalid --limit {limit}: must be 0 or more")


@command("tail")
@click.argument("task_id")
@click.option("--interval", type=float, default=None, hidden=True,
              help="Accepted for hermes-agent scripts; events arrive by doorbell, not by polling.")
@click.option("--timeout", type=float, default=None, metavar="S", help="Stop after S seconds.")
@click.option("--limit", type=int, default=None, metavar="N", help="Stop after N events.")
@common
def kanban_tail(task_id: str, interval: float | None, timeout: float | None, limit: int | None, board: str | None,
                as_json: bool) -> None:
    """Print a task's events so far, then follow new ones as they commit (Ctrl-C stops).

    Example:

    \b
        hermes kanban tail t_3fa2b1c4d5e6 --timeout 60
    """
    _check_follow(timeout, limit)
    with open_board(board) as b:
        b.get_task(task_id)
        _follow_filtered(b, keep=lambda e: e.task_id == task_id, kinds=None, timeout=timeout, limit=limit,
                         as_json=as_json, after=0)


@command("watch")
@click.option("--assignee", default=None, metavar="PROFILE", help="Only events of this profile's tasks.")
@click.option("--tenant", default=None, help="Only events of this tenant's tasks.")
@click.option("--kinds", default=None, metavar="K1,K2", help="Only these event kinds, comma-separated.")
@click.option("--interval", type=float, default=None, hidden=True,
              help="Accepted for hermes-agent scripts; events arrive by doorbell, not by polling.")
@click.option("--timeout", type=float, default=None, metavar="S", help="Stop after S seconds.")
@click.option("--limit", type=int, default=None, metavar="N", help="Stop after N events.")
@common
def kanban_watch(assignee: str | None, tenant: str | None, kinds: str | None, interval: float | None,
                 timeout: float | None, limit: int | None, board: str | None, as_json: bool) -> None:
    """Follow the whole board's new events as they commit (Ctrl-C stops), optionally only one assignee's or
    tenant's tasks, or some kinds.

    Example:

    \b
        hermes kanban watch --assignee researcher --kinds completed,blocked,gave_up
    """
    from hermes_cli.kanban.live.readers import parse_kinds

    _check_follow(timeout, limit)
    kind_list = list(parse_kinds(kinds) or ()) or None
    with open_board(board) as b:
        cache: dict[str, Task | None] = {}

        def task_of(e: Event) -> Task | None:
            if e.task_id is None:
                return None
            if e.task_id not in cache:
                try:
                    cache[e.task_id] = b.get_task(e.task_id)
                except NotFound:
                    cache[e.task_id] = None  # deleted since: its events still show without a task
            return cache[e.task_id]

        def keep(e: Event) -> bool:
            if assignee is None and tenant is None:
                return True
            if e.kind in ("assigned", "created") and e.task_id in cache:
                del cache[e.task_id]  # the assignee may have just changed
            t = task_of(e)
            return t is not None and (assignee is None or t.assignee == assignee) and (
                tenant is None or t.tenant == tenant)

        _follow_filtered(b, keep=keep, kinds=kind_list, timeout=timeout, limit=limit, as_json=as_json, after=None)


# -- hermes-agent's language-model verbs -------------------------------------------------------------------------------
#: why each of hermes-agent's agent-driven verbs is not here, and what to do instead
INSTEAD = {
    "specify": "it asks a language model to write a triage task's spec, and hermes kanban runs none; write it "
               "yourself: hermes kanban edit ID --title ... --body ..., then hermes kanban promote ID",
    "decompose": "it asks a language model to split a task, and hermes kanban runs none; split it yourself: "
                 "hermes kanban create TITLE --parent ID --assignee PROFILE, once per part",
    "swarm": "it builds a graph for hermes-agent's own agents; create the workers, verifier and synthesizer with "
             "hermes kanban create TITLE --assignee PROFILE --parent ID",
}


def _unsupported(verb: str) -> click.Command:
    @click.pass_context
    def refuse(ctx: click.Context) -> None:
        raise Unsupported(f"{verb} is not supported here: {INSTEAD[verb]} (see: docs/coming-from-hermes-agent.md)")

    return click.Command(
        verb, callback=refuse, hidden=True,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        help=f"Not supported here (hermes-agent's {verb}).\n\nExample:\n\n\b\n    hermes kanban {verb}",
    )


for _verb in INSTEAD:
    kanban.add_command(_unsupported(_verb), _verb)
