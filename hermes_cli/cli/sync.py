"""Hub commands: `sync` (write a board through to the hub) and `hub boards|list|show|stats|events` (read the fleet)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from hermes_cli.kanban.core.errors import UsageError
from hermes_cli.kanban.core.hubconf import HUB_URL_ENV, configured_hub, hub_file, redact, sync_disabled
from hermes_cli.kanban.core.textsafe import inline
from hermes_cli.kanban.core.values import parse_duration

from .common import board_slug, command, common, emit, json_option, kanban, one_line, open_board


def _log(prefix: str, quiet: bool):  # type: ignore[no-untyped-def]
    if quiet:
        return None

    def log(message: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        click.echo(f"{stamp} {prefix}: {one_line(message)}", err=True)

    return log


def _hub_url(hub: str | None) -> str:
    url = configured_hub(hub)
    if url is None:
        raise UsageError(f"no hub configured: pass --hub URL, set {HUB_URL_ENV}, or write the URL into {hub_file()}")
    return url


def hub_option(f: Any) -> Any:
    return click.option("--hub", "hub", metavar="URL", default=None,
                        help=f"The hub's PostgreSQL URL (default: ${HUB_URL_ENV}, else "
                        "$HERMES_HOME/kanban/hub.url).")(f)


@command("sync")
@click.option("--once", is_flag=True, help="Send everything pending, then exit (the default).")
@click.option("--follow", is_flag=True, help="Keep running: send each change as it commits (woken by the doorbell).")
@click.option("--all-boards", is_flag=True, help="Sync every board, each in its own process.")
@click.option("--timeout", default=None, metavar="DUR", help="Stop gracefully after this long, keeping the checkpoint.")
@click.option("--break-lock", is_flag=True, help="First free a stale sync lease (see --max-age).")
@click.option("--max-age", default=None, metavar="DUR",
              help="With --break-lock: only a lease whose last refresh is older than this (default 30s).")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@hub_option
@common
def kanban_sync(once: bool, follow: bool, all_boards: bool, timeout: str | None, break_lock: bool,
                max_age: str | None, quiet: bool, hub: str | None, board: str | None, as_json: bool) -> None:
    """Write the board through to the hub: every event after the hub's last acknowledged one, in batches.

    Single-flight per board and hub: a second sync exits 0 "skipped". The checkpoint survives SIGTERM, SIGKILL and
    --timeout; the next run resumes from the hub's ack. HERMES_KANBAN_SYNC=off disables it.

    Example:

    \b
        hermes kanban sync --hub postgresql://hermes@hub.example/fleet --once
        hermes kanban sync --follow --timeout 1h --json
        hermes kanban sync --all-boards --once --break-lock --max-age 5m
    """
    if once and follow:
        raise UsageError("use either --once or --follow, not both")
    if max_age is not None and not break_lock:
        raise UsageError("--max-age only applies with --break-lock")
    timeout_s = None if timeout is None else parse_duration(timeout, what="--timeout")
    from hermes_cli.kanban.hub import lease

    max_age_s = None
    if break_lock:
        max_age_s = lease.GRACE_S if max_age is None else parse_duration(max_age, what="--max-age")
    if all_boards and board_slug(board) is not None:
        raise UsageError("use either --board or --all-boards, not both")
    if sync_disabled():
        emit(as_json, {"skipped": True, "status": "skipped", "reason": "off"},
             "sync is off (HERMES_KANBAN_SYNC=off): nothing sent")
        return
    url = _hub_url(hub)
    if all_boards:
        from hermes_cli.kanban.hub.all_boards import sync_all_boards

        args = ["--follow" if follow else "--once"]
        for name, value in (("--timeout", timeout), ("--max-age", max_age)):
            if value is not None:
                args += [name, value]
        if break_lock:
            args.append("--break-lock")
        if quiet:
            args.append("--quiet")
        done = sync_all_boards(url, args, follow=follow, timeout=timeout_s, log=_log("sync --all-boards", quiet))
        emit(as_json, done.as_dict(), lambda: "\n".join(done.lines()))
        raise SystemExit(done.exit_code)

    from hermes_cli.kanban.hub.sync import Sync

    with open_board(board) as b:
        s = Sync(b, url, log=_log(f"sync {b.slug} -> {redact(url)}", quiet))
        with s.signals_stop():
            result = s.run(follow=follow, timeout=timeout_s, break_lock_max_age=max_age_s)
    emit(as_json, result.as_dict(), result.human())


@kanban.group(name="hub")
def kanban_hub() -> None:
    """Read the hub: every host's boards, tasks and events in one place (read-only).

    Example:

    \b
        hermes kanban hub boards --hub postgresql://hermes@hub.example/fleet
    """


def _age(seconds: Any) -> str:
    return "-" if seconds is None else f"{float(seconds):.0f}s"


@kanban_hub.command(name="boards")
@hub_option
@json_option
def kanban_hub_boards(hub: str | None, as_json: bool) -> None:
    """The boards the hub holds, per host, with their ack and their sync's lease.

    Example:

    \b
        hermes kanban hub boards --json
    """
    from hermes_cli.kanban.hub import fleet

    rows = fleet.boards(_hub_url(hub))

    def human() -> str:
        if not rows:
            return "no boards on the hub yet (see: hermes kanban sync)"
        return "\n".join(
            f"{inline(r['host'])}:{inline(r['slug'])}  {r['tasks']} tasks  {r['events']} events  acked "
            f"{r['acked']}  last seen {r['last_seen']}  sync "
            + (f"{inline(r['sync_host'] or '')} pid {r['sync_pid']} ({_age(r['sync_age'])} ago)" if r["sync_host"]
               else "idle")
            for r in rows)

    emit(as_json, rows, human)


@kanban_hub.command(name="list")
@click.option("--board", "board", default=None, metavar="B", help="One board: its id, slug or HOST:SLUG.")
@click.option("--status", default=None, metavar="S1,S2", help="Only these statuses, comma-separated.")
@click.option("--limit", type=int, default=200, metavar="N", help="At most N tasks (default 200).")
@hub_option
@json_option
def kanban_hub_list(board: str | None, status: str | None, limit: int, hub: str | None, as_json: bool) -> None:
    """Tasks across the fleet (latest snapshots), highest priority first.

    Example:

    \b
        hermes kanban hub list --status running,blocked
    """
    from hermes_cli.kanban.hub import fleet

    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    rows = fleet.tasks(_hub_url(hub), board=board, statuses=statuses, limit=limit)
    emit(as_json, rows, lambda: "\n".join(
        f"{inline(r['host'])}:{inline(r['board'])}  {r['id']}  {r['status']:<8} p{r['priority']}  {inline(r['title'])}"
        for r in rows) or "no tasks")


@kanban_hub.command(name="show")
@click.argument("task_id")
@click.option("--board", "board", default=None, metavar="B", help="One board: its id, slug or HOST:SLUG.")
@hub_option
@json_option
def kanban_hub_show(task_id: str, board: str | None, hub: str | None, as_json: bool) -> None:
    """One task as the hub has it, with its latest events.

    Example:

    \b
        hermes kanban hub show t_3fa2c1d4e5f6 --json
    """
    from hermes_cli.kanban.hub import fleet

    rows = fleet.task(_hub_url(hub), task_id, board=board)

    def human() -> str:
        out = []
        for r in rows:
            out.append(f"{r['id']}  {r['status']}  {inline(r['title'])}  ({inline(r['host'])}:{inline(r['board'])}, "
                       f"as of event {r['as_of_event']})")
            out += [f"  {e['id']:>6} {e['created_at']} {inline(e['kind'])}" for e in r["events"]]
        return "\n".join(out)

    emit(as_json, rows[0] if len(rows) == 1 else rows, human)


@kanban_hub.command(name="stats")
@click.option("--board", "board", default=None, metavar="B", help="One board: its id, slug or HOST:SLUG.")
@hub_option
@json_option
def kanban_hub_stats(board: str | None, hub: str | None, as_json: bool) -> None:
    """Task counts by status per board and for the whole fleet.

    Example:

    \b
        hermes kanban hub stats --json
    """
    from hermes_cli.kanban.hub import fleet

    data = fleet.stats(_hub_url(hub), board=board)

    def human() -> str:
        lines = [f"{data['board_count']} boards on {data['hosts']} hosts: "
                 + (", ".join(f"{k} {v}" for k, v in sorted(data["totals"].items())) or "no tasks")]
        lines += [f"  {inline(b['host'] or '?')}:{inline(b['board'] or '?')}  "
                  + ", ".join(f"{k} {v}" for k, v in sorted(b["by_status"].items())) for b in data["boards"]]
        return "\n".join(lines)

    emit(as_json, data, human)


@kanban_hub.command(name="events")
@click.option("--board", "board", default=None, metavar="B", help="One board: its id, slug or HOST:SLUG.")
@click.option("--task", "task_id", default=None, metavar="ID", help="Only this task's events.")
@click.option("--after", type=int, default=0, metavar="ID", help="Only events after this id (per board).")
@click.option("--limit", type=int, default=100, metavar="N", help="At most N events (default 100).")
@hub_option
@json_option
def kanban_hub_events(board: str | None, task_id: str | None, after: int, limit: int, hub: str | None,
                      as_json: bool) -> None:
    """Events across the fleet, oldest first.

    Example:

    \b
        hermes kanban hub events --board build-host:default --after 1200 --json
    """
    from hermes_cli.kanban.hub import fleet

    rows = fleet.events(_hub_url(hub), board=board, task_id=task_id, after=after, limit=limit)
    emit(as_json, rows, lambda: "\n".join(
        f"{inline(r['host'])}:{inline(r['board'])} {r['id']:>6} {r['created_at']} {inline(r['kind']):<16} "
        f"{inline(r['task_id'] or '-')}" for r in rows) or "no events")
