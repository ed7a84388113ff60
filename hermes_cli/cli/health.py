"""Health commands: doctor, backup, backups list, restore, repair, reconcile-completions."""

from __future__ import annotations

import sys
import time

import click

from hermes_cli.kanban.core.errors import UsageError
from hermes_cli.kanban.core.models import iso
from hermes_cli.kanban.core.paths import BoardPaths, resolve
from hermes_cli.kanban.durability import backup as backups
from hermes_cli.kanban.durability import doctor as health
from hermes_cli.kanban.durability import reconcile
from hermes_cli.kanban.durability import restore as restoring

from .common import age, board_slug, command, common, emit, kanban, one_line, open_board

_MARK = {"ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"}


def _paths(board: str | None) -> BoardPaths:
    return resolve(board_slug(board))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


@command("doctor")
@click.option("--full", is_flag=True, help="integrity_check + foreign_key_check instead of quick_check (slower).")
@common
def kanban_doctor(full: bool, board: str | None, as_json: bool) -> None:
    """Check the board's health; exit 0 only when healthy (1: needs attention, 4: storage unhealthy).

    Checks the SQLite version, the filesystem, quick_check (--full: integrity_check and foreign_key_check), the WAL
    size, the dispatcher lease (needed only when ready tasks have a command to run), stale claims, tasks that gave
    up, the spool backlog and the age of the last backup. Every finding names the command to run next.

    Example:

    \b
        hermes kanban doctor --full --json
    """
    report = health.doctor(_paths(board), full=full)
    worst = report.worst
    data = report.as_dict()
    if worst is not None:
        data["error"] = {"code": "unhealthy" if report.exit_code == 1 else "storage",
                         "message": f"{worst.check}: {worst.message}"}

    def human() -> str:
        lines = [f"board {report.board} ({report.db})"]
        for f in report.findings:
            lines.append(f"  {_MARK[f.level]}  {f.check:<15} {f.message}")
            if f.next and f.level in ("warn", "fail"):
                lines.append(f"{'':<23}next: {f.next}")
        lines.append(report.verdict)
        return "\n".join(lines)

    emit(as_json, data, human)
    if worst is not None:
        nxt = f" (see: {worst.next})" if worst.next else ""
        click.echo(one_line(f"error: board {report.board} is unhealthy: {worst.check}: {worst.message}{nxt}"), err=True)
    sys.exit(report.exit_code)


@command("backup")
@click.option("--output", default=None, metavar="PATH", help="Write the backup here (not rotated) instead of "
              "<board dir>/backups/.")
@click.option("--keep", type=int, default=None, metavar="N",
              help=f"Keep the newest N automatic backups (default {backups.DEFAULT_KEEP}, "
              "or $HERMES_KANBAN_BACKUP_KEEP).")
@common
def kanban_backup(output: str | None, keep: int | None, board: str | None, as_json: bool) -> None:
    """Take a verified online backup (SQLite backup API, integrity_check, fsync, rename).

    Safe while workers and the dispatcher run. Large boards report progress on stderr.

    Example:

    \b
        hermes kanban backup
        hermes kanban backup --output /srv/backups/board-$(date +%F).db --json
    """
    shown = {"last": 0.0}

    def progress(done: int, total: int) -> None:
        from ..kanban.store.health import BACKUP_STEP_PAGES

        if total > BACKUP_STEP_PAGES and (time.monotonic() - shown["last"] > 0.5 or done == total):
            shown["last"] = time.monotonic()
            click.echo(f"backup: {done}/{total} pages ({100 * done // max(total, 1)}%)", err=True)

    with open_board(board) as b:
        info = backups.create(b, output=output, keep=keep, progress=progress)
    emit(as_json, info.as_dict(),
         f"backup {info.path} ({_size(info.size)}, {info.tasks} tasks, integrity_check ok, {info.seconds}s)")


@kanban.group(name="backups")
def kanban_backups() -> None:
    """List a board's backups.

    Example:

    \b
        hermes kanban backups list
    """


@kanban_backups.command(name="list")
@common
def kanban_backups_list(board: str | None, as_json: bool) -> None:
    """List the board's automatic backups, newest first.

    Example:

    \b
        hermes kanban backups list --json
    """
    paths = _paths(board)
    found = backups.list_backups(paths)
    now = time.time()

    def human() -> str:
        if not found:
            return f"no backups in {paths.backups_dir} (see: hermes kanban backup)"
        return "\n".join(
            f"{b.path}  {iso(b.created_at)} ({age(b.created_at, now)} ago)  {_size(b.size):>9}  "
            f"{'verified' if b.verified else 'UNVERIFIED'}  {b.tasks if b.tasks is not None else '?'} tasks"
            + (f"  [{b.reason}]" if b.reason else "")
            for b in found
        )

    emit(as_json, [b.as_dict() for b in found], human)


@command("restore")
@click.argument("backup", required=False, metavar="BACKUP")
@click.option("--latest", is_flag=True, help="Restore the newest verified backup of this board.")
@click.option("--no-replay", is_flag=True, help="Do not apply the spool after restoring.")
@common
def kanban_restore(backup: str | None, latest: bool, no_replay: bool, board: str | None, as_json: bool) -> None:
    """Replace the board with a backup, then replay the spool. Refuses while any process has the board open.

    The old db, -wal and -shm are moved together to <board dir>/pre-restore/<time>/; completions the old board
    logged after the backup are salvaged into the spool when it can still be read; run and event ids stay unique.

    Example:

    \b
        hermes kanban restore --latest
        hermes kanban restore ~/.hermes/kanban/boards/default/backups/kanban-20260101T120000.000Z.db --json
    """
    paths = _paths(board)
    if (backup is None) == (not latest):
        raise UsageError("give either a BACKUP file or --latest (see: hermes kanban backups list)")
    source = backups.latest(paths).path if latest else backup
    assert source is not None
    result = restoring.restore(paths, source, replay=not no_replay)

    def human() -> str:
        lines = [f"restored {result.board} from {result.restored_from}"]
        if result.moved_aside:
            lines.append(f"  old files moved to {result.moved_aside}")
        lines.append(f"  salvaged {result.salvaged} report(s) from the old board ({result.salvage_note})")
        if result.replay is not None:
            r = result.replay
            lines.append(f"  spool: {r['applied']} applied, {r['skipped']} skipped, {r['conflicts']} conflict(s)")
        lines.append(f"  integrity_check {result.integrity_check}")
        return "\n".join(lines)

    emit(as_json, result.as_dict(), human)


@command("repair")
@common
def kanban_repair(board: str | None, as_json: bool) -> None:
    """Heal index-only damage with REINDEX and re-check; refuse anything else (exit 4) and say how to restore.

    Example:

    \b
        hermes kanban repair --json
    """
    result = health.repair(_paths(board))

    def human() -> str:
        if result.status == "ok":
            return f"{result.db}: integrity_check ok, nothing to repair"
        return (f"{result.db}: repaired (REINDEX {', '.join(result.reindexed) or 'all'}); integrity_check ok"
                + (f"; a copy of the damaged file is in {result.quarantine}" if result.quarantine else ""))

    emit(as_json, result.as_dict(), human)


@command("reconcile-completions")
@click.option("--dry-run", "mode", flag_value="dry-run", default=True, help="Show what would happen (default).")
@click.option("--apply", "mode", flag_value="apply", help="Back up, then apply the spool in one transaction.")
@click.option("--keep", type=int, default=None, metavar="N", help="Backups to keep when --apply takes one.")
@common
def kanban_reconcile(mode: str, keep: int | None, board: str | None, as_json: bool) -> None:
    """Apply spooled completions and blocks to the board (dry run unless --apply).

    One record per spooled report: task_id, run_id, status, proposed_action (apply, skip, conflict), reason and
    detail; files that are not valid reports are listed as skip/invalid_report. --apply takes a verified backup and
    runs quick_check first, applies everything in one transaction, runs quick_check again, moves applied reports to
    spool/applied/ and invalid files to spool/invalid/. It exits 3 when conflicts remain (the JSON result then has
    an "error" key too). Re-running it is a no-op.

    Example:

    \b
        hermes kanban reconcile-completions --json
        hermes kanban reconcile-completions --apply
    """
    with open_board(board) as b:
        if mode == "apply":
            result = reconcile.apply(b, keep=keep)
            decisions, invalid = result.decisions, result.invalid
        else:
            decisions, invalid = reconcile.plan(b)

    def table() -> str:
        if not decisions:
            return (f"no valid report in the spool ({len(invalid)} invalid file(s), see the warnings above)" if invalid
                    else "spool empty: nothing to reconcile")
        lines = [f"{'task':<16} {'run':>6}  {'kind':<8} {'status':<8} {'action':<8} reason"]
        for d in decisions:
            r = d.report
            lines.append(f"{r.task_id:<16} {r.run_id if r.run_id is not None else '-':>6}  {r.kind:<8} "
                         f"{d.status or '-':<8} {d.proposed_action:<8} {d.reason}"
                         + (f" ({d.detail})" if d.detail and d.proposed_action == reconcile.CONFLICT else ""))
        return "\n".join(lines)

    for bad in invalid:
        where = f"; moved to {bad['moved_to']}" if bad.get("moved_to") else " (--apply moves it to spool/invalid/)"
        # one_line: a file name in the spool directory is anybody's choice, control characters included
        click.echo(one_line(f"warning: {bad['file']} is not a valid spool report ({bad['problem']}){where}"), err=True)
    if mode != "apply":
        emit(as_json, [d.as_dict() for d in decisions] + [reconcile.invalid_record(b) for b in invalid], table)
        return
    data = result.as_dict()
    message = None
    if result.conflicts:
        reasons = sorted({d.reason for d in result.decisions if d.proposed_action == reconcile.CONFLICT})
        message = (f"{result.conflicts} spooled report(s) conflict with the board ({', '.join(reasons)}) and stay in "
                   "the spool; settle those tasks, then re-run (see: hermes kanban reconcile-completions)")
        data["error"] = {"code": "conflict", "message": message}
    emit(as_json, data, lambda: table() + (
        f"\napplied {result.applied}, skipped {data['skipped']}, conflicts {result.conflicts}"
        + (f"; backup {result.backup}" if result.backup else "")))
    if message is not None:
        click.echo(f"error: {message}", err=True)
        sys.exit(3)
