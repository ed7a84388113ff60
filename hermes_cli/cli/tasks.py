"""Task commands: create, list, show, comment, link, unlink, claim, heartbeat, complete, block, unblock,
request-review, approve, request-changes, archive, events, stats."""

from __future__ import annotations

import os
import time

import click

from hermes_cli.kanban.core.errors import UsageError
from hermes_cli.kanban.core.models import STATUS_ORDER, Task
from hermes_cli.kanban.domain.board import DEFAULT_LEASE_S

from . import hot, render
from .common import board_slug, command, common, emit, env_task_and_run, open_board, open_worker_board, task_line
from .greedy import GreedyCommand

#: run ids are positive 64-bit integers; anything else is a usage error, never a "stale run"
RUN_ID = click.IntRange(1, 2**63 - 1)


_task_out = render.task_out


@command("create")
@click.argument("title")
@click.option("--body", default=None, help="Task description.")
@click.option("--body-file", default=None, metavar="PATH", help="Read the description from a file ('-' = stdin).")
@click.option("--priority", default="0", metavar="N", help="Higher runs first; -1000..1000 (default 0).")
@click.option("--parent", "parents", multiple=True, metavar="ID", help="A task this one waits for (repeatable).")
@click.option("--command", "command_", default=None, metavar="CMD", help="Worker argv for the dispatcher (no shell).")
@click.option("--tenant", default=None, help="Soft namespace; inherited from the first parent that has one.")
@click.option("--idempotency-key", default=None, metavar="K", help="Creating twice with one key gives one task.")
@click.option("--max-runtime", default=None, metavar="DUR", help="Kill the worker after this long: 90s, 30m, 2h.")
@click.option("--max-retries", default=None, type=int, metavar="N", help="Retries after a crash or timeout.")
@click.option("--review", is_flag=True, help="Gate completion on a review: complete -> review, approve -> done.")
@click.option("--assignee", default=None, metavar="PROFILE", help="The profile that works on it.")
@click.option("--created-by", default=None, metavar="NAME", help="Who asked for it (default: $HERMES_PROFILE).")
@click.option("--skill", "skills", multiple=True, metavar="S", help="A skill for the worker (repeatable; stored).")
@click.option("--triage", is_flag=True, help="Park it in triage until someone promotes it.")
@click.option("--initial-status", type=click.Choice(hot.INITIAL_STATUSES), default=None,
              help="blocked: create it blocked; running: the usual (ready, or todo while a parent is open).")
@click.option("--workspace", default=None, metavar="WS",
              help="Where the worker runs: scratch, worktree, worktree:PATH or dir:PATH (default: the board's "
                   "default workdir, else scratch).")
@click.option("--branch", default=None, metavar="B", help="With --workspace worktree: the branch (default wt/<id>).")
@click.option("--model", default=None, metavar="M",
              help="A model override for its worker (HERMES_KANBAN_MODEL; see set-model).")
@click.option("--provider", default=None, metavar="P", help="With --model: its provider (HERMES_KANBAN_PROVIDER).")
@click.option("--scheduled-at", default=None, metavar="TIME",
              help="Not claimed or started before this ISO 8601 time (e.g. 2026-06-01T03:00:00Z).")
@click.option("--goal", is_flag=True, hidden=True, help="hermes-agent's; not used here (a note says so).")
@click.option("--goal-max-turns", default=None, hidden=True, help="hermes-agent's; not used here (a note says so).")
@common
def kanban_create(
    title: str, body: str | None, body_file: str | None, priority: str, parents: tuple[str, ...],
    command_: str | None, tenant: str | None, idempotency_key: str | None, max_runtime: str | None,
    max_retries: int | None, review: bool, assignee: str | None, created_by: str | None, skills: tuple[str, ...],
    triage: bool, initial_status: str | None, workspace: str | None, branch: str | None, model: str | None,
    provider: str | None, scheduled_at: str | None, goal: bool, goal_max_turns: str | None, board: str | None,
    as_json: bool,
) -> None:
    """Create a task and print its id.

    Example:

    \b
        hermes kanban create "summarise logs" --priority 5 --command "python summarise.py {task_id}"
        hermes kanban create "research the market" --assignee researcher --created-by ana --skill web-search
        hermes kanban create "fix CI" --assignee coder --workspace worktree --branch wt/ci-fix
    """
    ignored = [name for name, given in (("--goal", goal or None), ("--goal-max-turns", goal_max_turns))
               if given is not None]
    out = hot.create(
        board_slug(board), title, body=body, body_file=body_file, priority=priority, parents=parents,
        command=command_, tenant=tenant, idempotency_key=idempotency_key, max_runtime=max_runtime,
        max_retries=max_retries, review=review, assignee=assignee, created_by=created_by, skills=skills,
        triage=triage, initial_status=initial_status, workspace=workspace, branch=branch, model=model,
        provider=provider, scheduled_at=scheduled_at,
    )
    if ignored:
        # hermes-agent's agent loop settings: a worker here is a command, which decides when to stop. Only once the
        # task exists: a failing create prints its one `error:` line and nothing else.
        render.warn(f"note: {', '.join(ignored)} not used here: a worker is its profile's command, which decides "
                    "when to stop (see: docs/coming-from-hermes-agent.md)")
    out.emit(as_json)


class _SortChoice(click.Choice):  # type: ignore[type-arg]
    """Our sort names, plus hermes-agent's (accepted, and listed in --help rather than in every error)."""

    UPSTREAM = ("created", "created-desc", "priority-desc", "status", "assignee", "title")

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if value in self.UPSTREAM:
            return value
        return super().convert(value, param, ctx)


@command("list")
@click.option("--status", "statuses", multiple=True, metavar="S", help="Only these statuses (repeatable).")
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--parent", default=None, metavar="ID", help="Only children of this task.")
@click.option("--search", default=None, metavar="TEXT", help="Only titles containing TEXT.")
@click.option("--sort", type=_SortChoice(["priority", "age", "newest", "updated"]), default="priority",
              show_default=True,
              help="Also hermes-agent's created, created-desc, priority-desc, status, assignee and title.")
@click.option("--limit", type=int, default=None, metavar="N", help="At most N tasks.")
@click.option("--all", "--archived", "include_archived", is_flag=True, help="Include archived tasks.")
@click.option("--assignee", default=None, metavar="PROFILE", help="Only tasks assigned to this profile.")
@click.option("--mine", is_flag=True, help="Only tasks assigned to $HERMES_PROFILE (else your login name).")
@common
def kanban_list(
    statuses: tuple[str, ...], tenant: str | None, parent: str | None, search: str | None, sort: str,
    limit: int | None, include_archived: bool, assignee: str | None, mine: bool, board: str | None, as_json: bool,
) -> None:
    """List tasks (archived ones only with --all or --status archived). `ls` is the same command.

    Example:

    \b
        hermes kanban list --status ready --sort age --json
        hermes kanban list --assignee researcher
    """
    if mine:
        # hermes-agent falls back to its active profile; here there is none, so the login name is the fallback
        source, me = "$HERMES_PROFILE", os.environ.get("HERMES_PROFILE") or None
        if me is None:
            import getpass

            source = "your login name"
            try:
                me = getpass.getuser()  # $LOGNAME, $USER, ..., else the password database's name for this uid
            except (OSError, KeyError):
                raise UsageError("list --mine lists the tasks of $HERMES_PROFILE (else of your login name), and "
                                 "neither is known; set HERMES_PROFILE to your profile, or use --assignee PROFILE"
                                 ) from None
        if assignee is not None and assignee != me:
            raise UsageError(f"--mine is {me} ({source}) and --assignee is {assignee}: give one of them")
        assignee = me
    wanted: list[str] = list(statuses)
    if include_archived and not wanted:
        wanted = [str(s) for s in STATUS_ORDER]
    with open_board(board) as b:
        tasks = b.list_tasks(status=wanted, tenant=tenant, parent=parent, search=search, sort=sort, limit=limit,
                             assignee=assignee)
    now = time.time()
    emit(as_json, [t.as_dict() for t in tasks],
         lambda: "\n".join(_list_line(t, now) for t in tasks) if tasks else "no tasks")


def _list_line(t: Task, now: float) -> str:
    # assignees are profile names (letters, digits and ._@:+-): safe to print as they are
    return task_line(t, now) + (f"  @{t.assignee}" if t.assignee else "")


@command("show")
@click.argument("task_id")
@click.option("--events", "n_events", type=int, default=20, show_default=True, help="How many recent events.")
@common
def kanban_show(task_id: str, n_events: int, board: str | None, as_json: bool) -> None:
    """Show a task with its parents, children, runs, comments and last events.

    Example:

    \b
        hermes kanban show t_3fa2b1c4d5e6
    """
    hot.show(board_slug(board), task_id, events=n_events).emit(as_json)


@command("comment")
@click.argument("task_id")
@click.argument("words", nargs=-1, required=True, metavar="TEXT...")
@click.option("--author", default=None, help="Who is speaking (default: unset).")
@common
def kanban_comment(task_id: str, words: tuple[str, ...], author: str | None, board: str | None,
                   as_json: bool) -> None:
    """Add a comment to a task (several words are joined with spaces, as hermes-agent does).

    Example:

    \b
        hermes kanban comment t_3fa2b1c4d5e6 "the flaky test is fixed upstream" --author ana
    """
    text = " ".join(words)
    with open_board(board) as b:
        c = b.comment(task_id, text, author=author)
    emit(as_json, c.as_dict(), f"comment {c.id} on {c.task_id}")


@command("link")
@click.argument("parent_id")
@click.argument("child_id")
@common
def kanban_link(parent_id: str, child_id: str, board: str | None, as_json: bool) -> None:
    """Make CHILD wait for PARENT (cycles are refused).

    Example:

    \b
        hermes kanban link t_aaaaaaaaaaaa t_bbbbbbbbbbbb
    """
    with open_board(board) as b:
        child = b.link(parent_id, child_id)
    emit(as_json, _task_out(child), f"{parent_id} -> {child.id} ({child.status})")


@command("unlink")
@click.argument("parent_id")
@click.argument("child_id")
@common
def kanban_unlink(parent_id: str, child_id: str, board: str | None, as_json: bool) -> None:
    """Remove a dependency; a child with no unfinished parents left becomes ready.

    Example:

    \b
        hermes kanban unlink t_aaaaaaaaaaaa t_bbbbbbbbbbbb
    """
    with open_board(board) as b:
        child = b.unlink(parent_id, child_id)
    emit(as_json, _task_out(child), f"unlinked {parent_id} -> {child.id} ({child.status})")


@command("claim")
@click.argument("task_id", required=False)
@click.option("--ttl", default=f"{DEFAULT_LEASE_S:g}s", show_default=True, metavar="DUR", help="Lease length.")
@click.option("--worker", default=None, metavar="NAME", help="Who is claiming (shown in runs).")
@click.option("--tenant", default=None, help="With no TASK_ID: claim only this tenant's tasks.")
@common
def kanban_claim(task_id: str | None, ttl: str, worker: str | None, tenant: str | None, board: str | None,
                 as_json: bool) -> None:
    """Claim a task (or the next ready one) and open a run. Prints the run id: the fencing token for
    heartbeat/complete/block. A task claimed by a live run exits 3.

    Example:

    \b
        hermes kanban claim t_3fa2b1c4d5e6 --ttl 5m --json
    """
    hot.claim(board_slug(board), task_id, ttl=ttl, worker=worker, tenant=tenant).emit(as_json)


@command("heartbeat")
@click.argument("task_id", required=False)
@click.option("--run-id", type=RUN_ID, default=None, help="Your run (default: $HERMES_KANBAN_RUN_ID).")
@click.option("--ttl", default=f"{DEFAULT_LEASE_S:g}s", show_default=True, metavar="DUR", help="New lease length.")
@click.option("--note", default=None, metavar="TEXT", help="A short progress note, kept as a heartbeat event.")
@common
def kanban_heartbeat(task_id: str | None, run_id: int | None, ttl: str, note: str | None, board: str | None,
                     as_json: bool) -> None:
    """Extend your run's lease. A run that is no longer the task's current run exits 3.

    Example:

    \b
        hermes kanban heartbeat t_3fa2b1c4d5e6 --run-id 42
        hermes kanban heartbeat --note "halfway through the logs"
    """
    hot.heartbeat(board_slug(board), task_id, run_id=run_id, ttl=ttl, note=note).emit(as_json)


@command("complete")
@click.argument("task_ids", nargs=-1)
@click.option("--run-id", type=RUN_ID, default=None, help="Your run (default: $HERMES_KANBAN_RUN_ID in a worker).")
@click.option("--summary", default=None, help="One line on what was done (default: the result).")
@click.option("--result", default=None, metavar="TEXT", help="What the task produced; handed to its children.")
@click.option("--metadata", default=None, metavar="JSON", help="A JSON object of facts, kept on the run.")
@click.option("--force", is_flag=True, help="Complete a task claimed by someone else's live run.")
@click.option("--next", "next_", is_flag=True,
              help="With --run-id: claim the next ready task in the same transaction (printed like claim).")
@click.option("--ttl", default=None, metavar="DUR", help=f"With --next: the new lease (default {DEFAULT_LEASE_S:g}s).")
@click.option("--worker", default=None, metavar="NAME", help="With --next: who claims (shown in runs).")
@click.option("--tenant", default=None, help="With --next: claim only this tenant's tasks.")
@common
def kanban_complete(task_ids: tuple[str, ...], run_id: int | None, summary: str | None, result: str | None,
                    metadata: str | None, force: bool, next_: bool, ttl: str | None, worker: str | None,
                    tenant: str | None, board: str | None, as_json: bool) -> None:
    """Mark a task done (or in review, for review-gated tasks). If the board cannot be written, the completion is
    spooled durably and applied later (see: reconcile-completions). Several ids (an operator closing tasks) are
    completed together or not at all; --summary and --metadata are per task, so they take one id. A pull worker adds
    --next to complete and claim its next task in one transaction (one commit instead of two).

    Example:

    \b
        hermes kanban complete t_3fa2b1c4d5e6 --summary "report written"
        hermes kanban complete --result "3 sources found" --metadata '{"sources": 3}'
        hermes kanban complete t_3fa2b1c4d5e6 --run-id 42 --next --json
    """
    hot.complete(board_slug(board), task_ids, run_id=run_id, summary=summary, result=result, metadata=metadata,
                 force=force, next_=next_, ttl=ttl, worker=worker, tenant=tenant).emit(as_json)


@command("block", cls=GreedyCommand, greedy=("--ids",))
@click.argument("task_id", required=False)
@click.argument("reason_words", nargs=-1)
@click.option("--run-id", type=RUN_ID, default=None, help="Your run (default: $HERMES_KANBAN_RUN_ID in a worker).")
@click.option("--reason", "reason_opt", default=None, help="Why (same as the REASON argument).")
@click.option("--ids", "more_ids", multiple=True, metavar="ID...", help="More tasks to block with the same reason.")
@click.option("--kind", type=click.Choice(hot.BLOCK_KINDS), default=None,
              help="Why, typed: dependency waits in todo for unfinished parents; the others wait for a person.")
@click.option("--force", is_flag=True, help="Block a task claimed by someone else's live run.")
@common
def kanban_block(task_id: str | None, reason_words: tuple[str, ...], run_id: int | None, reason_opt: str | None,
                 more_ids: tuple[str, ...], kind: str | None, force: bool, board: str | None, as_json: bool) -> None:
    """Block a task until a person unblocks it. Spooled like complete when the board cannot be written.
    Inside a worker the task comes from the environment, so `block "REASON"` alone blocks the worker's own task.
    The reason may be several words; --ids blocks more tasks with it (all or none).

    Example:

    \b
        hermes kanban block t_3fa2b1c4d5e6 "needs an API key"
        hermes kanban block t_3fa2b1c4d5e6 waiting for the data --kind dependency
    """
    hot.block(board_slug(board), task_id, reason_words, run_id=run_id, reason_opt=reason_opt, more_ids=more_ids,
              kind=kind, force=force).emit(as_json)


@command("unblock")
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--reason", default=None)
@common
def kanban_unblock(task_ids: tuple[str, ...], reason: str | None, board: str | None, as_json: bool) -> None:
    """Unblock tasks: back to ready (or todo while parents are unfinished) with a fresh retry budget. Several ids
    are unblocked together or not at all; --json prints a list for several, one object for one.

    Example:

    \b
        hermes kanban unblock t_3fa2b1c4d5e6
    """
    with open_board(board) as b:
        done = b.unblock_many(task_ids, reason=reason)
    _emit_tasks(as_json, done)


def _emit_tasks(as_json: bool, tasks: list[Task], **extra: object) -> None:
    """One task: its object (as before several were accepted); several: a list."""
    data: object = _task_out(tasks[0], **extra) if len(tasks) == 1 else [_task_out(t, **extra) for t in tasks]
    emit(as_json, data, "\n".join(f"{t.id} {t.status}" for t in tasks))


@command("request-review")
@click.argument("task_id", required=False)
@click.option("--run-id", type=RUN_ID, default=None, help="Your run (default: $HERMES_KANBAN_RUN_ID in a worker).")
@click.option("--summary", default=None)
@click.option("--force", is_flag=True, help="Override someone else's live run.")
@click.option("--metadata", default=None, metavar="JSON", help="A JSON object kept on the run (as complete keeps it).")
@click.option("--reviewer", default=None, metavar="PROFILE", help="Who should review it (kept on the event).")
@common
def kanban_request_review(task_id: str | None, run_id: int | None, summary: str | None, force: bool,
                          metadata: str | None, reviewer: str | None, board: str | None, as_json: bool) -> None:
    """Send a task to review.

    Example:

    \b
        hermes kanban request-review t_3fa2b1c4d5e6 --summary "ready for a look"
        hermes kanban request-review --summary "tests pass" --metadata '{"tests_run": 3}' --reviewer reviewer
    """
    task, run = env_task_and_run(task_id, run_id)
    with open_worker_board(board) as b:
        t = b.request_review(task, run, summary=summary, force=force, metadata=metadata, reviewer=reviewer)
    emit(as_json, _task_out(t), f"{t.id} {t.status}")


@command("approve")
@click.argument("task_id")
@click.option("--summary", default=None)
@common
def kanban_approve(task_id: str, summary: str | None, board: str | None, as_json: bool) -> None:
    """Approve a task in review: it becomes done and its children may start.

    Example:

    \b
        hermes kanban approve t_3fa2b1c4d5e6
    """
    with open_board(board) as b:
        t = b.approve(task_id, summary=summary)
    emit(as_json, _task_out(t), f"{t.id} {t.status}")


@command("request-changes")
@click.argument("task_id")
@click.argument("words", nargs=-1, required=True, metavar="REASON...")
@common
def kanban_request_changes(task_id: str, words: tuple[str, ...], board: str | None, as_json: bool) -> None:
    """Send a task in review back to ready, with the reason (several words are joined) as a comment.

    Example:

    \b
        hermes kanban request-changes t_3fa2b1c4d5e6 "add a test for the empty case"
    """
    reason = " ".join(words)
    with open_board(board) as b:
        t = b.request_changes(task_id, reason=reason)
    emit(as_json, _task_out(t), f"{t.id} {t.status}")


@command("archive", cls=GreedyCommand, greedy=("--rm",))
@click.argument("task_ids", nargs=-1)
@click.option("--rm", "purge_ids", multiple=True, metavar="ID...",
              help="Delete these archived tasks for good (their events stay in the log).")
@common
def kanban_archive(task_ids: tuple[str, ...], purge_ids: tuple[str, ...], board: str | None, as_json: bool) -> None:
    """Archive tasks (a live run is closed and its worker fenced off); with --rm, delete archived tasks. Several
    ids are done together or not at all.

    Example:

    \b
        hermes kanban archive t_3fa2b1c4d5e6
        hermes kanban archive --rm t_3fa2b1c4d5e6
    """
    if task_ids and purge_ids:
        raise UsageError("give either task ids to archive or --rm with archived task ids, not both")
    if not task_ids and not purge_ids:
        raise UsageError("missing task id: hermes kanban archive ID... (or --rm ID... to delete archived tasks)")
    with open_board(board) as b:
        if purge_ids:
            gone = b.delete_archived(purge_ids)
            data: object = {"deleted": gone}
            emit(as_json, data, "\n".join(f"{t} deleted" for t in gone))
            return
        done = b.archive_many(task_ids)
        hot.release_worktrees(b, done)
    _emit_tasks(as_json, done)


@command("stats")
@common
def kanban_stats(board: str | None, as_json: bool) -> None:
    """Counts by status, run outcomes, open runs and expired leases.

    Example:

    \b
        hermes kanban stats --json
    """
    with open_board(board) as b:
        s = b.stats()

    def human() -> str:
        # triage is shown only when used: most boards never park a task there
        by = "  ".join(f"{k} {v}" for k, v in s["by_status"].items() if v or k != "triage")
        outs = "  ".join(f"{k} {v}" for k, v in sorted(s["run_outcomes"].items())) or "none"
        return (f"board {s['board']}: {s['total']} tasks\n  {by}\n  run outcomes: {outs}\n"
                f"  open runs {s['open_runs']}   expired leases {s['expired_leases']}   "
                f"done in the last hour {s['done_last_hour']}")

    emit(as_json, s, human)
