"""Dispatcher commands: dispatch (one pass), daemon (the long-running supervisor), demo."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

import click

from hermes_cli.kanban.core.errors import InvalidValue, UsageError
from hermes_cli.kanban.core.values import parse_duration

from .common import board_slug, command, common, emit, json_option, one_line, open_board


def _progress(prefix: str, quiet: bool):  # type: ignore[no-untyped-def]
    if quiet:
        return None

    def log(message: str) -> None:
        # one_line: messages quote data (a holder's host name, a worker's argv) that may hold line breaks
        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        click.echo(f"{stamp} {prefix}: {one_line(message)}", err=True)

    return log


class _StoppedEarly(BaseException):
    """SIGTERM or SIGHUP while the command was still starting: it stops there (a BaseException, so that no `except
    Exception` on the way can swallow it; every write on the way rolls back on it like on a KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _StartupSignals:
    """The dispatch command's signal handlers until the dispatcher takes them over, installed before anything else
    (opening the board can wait on its locks): a SIGTERM or SIGHUP there stops the command with a summary (exit 0,
    nothing started) instead of killing it silently; SIGINT stays a KeyboardInterrupt (exit 130, `error: aborted`).
    Once the dispatcher has taken the signals over (`hand_over`), these handlers do nothing: a signal that comes
    after the dispatcher stopped and restored them only finds it printing its summary."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.starting = True
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._old[sig] = signal.signal(sig, self._on_signal)

    def hand_over(self) -> None:
        self.starting = False

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.starting:
            return  # the dispatcher has stopped already; its summary follows at once
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise _StoppedEarly(signum)


def _supervisor_options(f):  # type: ignore[no-untyped-def]
    """The options `dispatch` and `daemon` share (the same dispatcher; they differ in how long it runs)."""
    for option in reversed((
        click.option("--once", is_flag=True,
                     help="Start up to --max-spawn ready tasks, wait for their workers, then exit."),
        click.option("--until-idle", is_flag=True,
                     help="Dispatch until nothing is ready, running or waiting for a retry, then exit."),
        click.option("--max-spawn", type=int, default=None, metavar="N", help="Workers running at once (default 4)."),
        click.option("--failure-limit", type=int, default=None, metavar="N",
                     help="Give a task up after N failed attempts, whatever its --max-retries allows."),
        click.option("--max-runtime-default", default=None, metavar="DUR",
                     help="Max runtime of tasks created without --max-runtime (default: unlimited)."),
        click.option("--backup-interval", default=None, metavar="DUR",
                     help="Take a verified backup whenever the newest is older than this (default 1h; 0 or off: "
                          "never)."),
        click.option("--timeout", default=None, metavar="DUR",
                     help="Stop after this long: no new workers, outcomes flushed, lease released, running workers "
                          "kept."),
        click.option("--all-boards", is_flag=True, help="Dispatch every board, each in its own process."),
        click.option("--board-retry", default=None, metavar="DUR",
                     help="With --all-boards: restart a board's dispatcher that failed after this long (default "
                          "30s)."),
        click.option("--break-lock", is_flag=True, help="First remove the lease of a dead dispatcher (see --max-age)."),
        click.option("--max-age", default=None, metavar="DUR",
                     help="With --break-lock: only if its last refresh is older than this (default: the lease "
                          "grace)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr."),
    )):
        f = option(f)
    return f


@command("dispatch")
@_supervisor_options
@click.option("--max", "max_start", type=click.IntRange(0, 1000), default=None, metavar="N",
              help="Start at most N workers in this pass.")
@click.option("--dry-run", is_flag=True, help="Say what one pass would start and reclaim; change nothing.")
@common
def kanban_dispatch(
    once: bool, until_idle: bool, max_spawn: int | None, failure_limit: int | None,
    max_runtime_default: str | None, backup_interval: str | None, timeout: str | None, all_boards: bool,
    board_retry: str | None, break_lock: bool, max_age: str | None, quiet: bool, max_start: int | None,
    dry_run: bool, board: str | None, as_json: bool,
) -> None:
    """One pass of the dispatcher, then return: reclaim expired leases, adopt this host's workers that still run,
    start a worker for each ready task that can start (up to --max-spawn running, at most --max), and exit 0 with
    what it started; the workers go on running. For scripts and cron. `hermes kanban daemon` is the long-running
    supervisor.

    With --once it waits for the workers it started; with --until-idle it dispatches until nothing is ready or
    running. While another live dispatcher holds the board it does nothing and exits 0 with "skipped: lease held
    by ...". Settings also come from the board's config.toml ([dispatch] table); flags win.

    Example:

    \b
        hermes kanban create "nightly report" --command "python3 report.py {task_id} {workspace}"
        hermes kanban dispatch --max 3 --json
        hermes kanban dispatch --dry-run
        hermes kanban dispatch --until-idle --max-spawn 8
    """
    if backup_interval is not None and not (once or until_idle or dry_run):
        raise UsageError("a one-pass dispatch takes no backups: use hermes kanban daemon --backup-interval DUR, or "
                         "hermes kanban backup from cron")
    if dry_run:
        _dry_run(once, until_idle, all_boards, timeout, break_lock, max_spawn, failure_limit, max_runtime_default,
                 backup_interval, max_start, board, as_json)
        return
    _dispatch_command(once, until_idle, max_spawn, failure_limit, max_runtime_default, backup_interval, timeout,
                      all_boards, board_retry, break_lock, max_age, quiet, board, as_json, verb="dispatch",
                      max_start=max_start)


@command("daemon")
@_supervisor_options
@click.option("--force", is_flag=True, hidden=True, help="hermes-agent's (its daemon needed it); accepted.")
@click.option("--interval", default=None, hidden=True, help="hermes-agent's tick interval; not needed here (the "
              "dispatcher wakes on the doorbell).")
@click.option("--max", "max_spawn_alias", type=int, default=None, hidden=True, metavar="N",
              help="hermes-agent's name for --max-spawn.")
@click.option("--verbose", "-v", is_flag=True, hidden=True, help="hermes-agent's; progress lines are on by default.")
@common
def kanban_daemon(
    once: bool, until_idle: bool, max_spawn: int | None, failure_limit: int | None,
    max_runtime_default: str | None, backup_interval: str | None, timeout: str | None, all_boards: bool,
    board_retry: str | None, break_lock: bool, max_age: str | None, quiet: bool, force: bool, interval: str | None,
    max_spawn_alias: int | None, verbose: bool, board: str | None, as_json: bool,
) -> None:
    """Run the dispatcher until stopped: start a worker process for each ready task, supervise it, record its
    outcome.

    Runs until stopped (SIGINT/SIGTERM/SIGHUP: graceful; a second signal: immediate) unless --once, --until-idle or
    --timeout say otherwise. While another live dispatcher holds the board, it stands by and takes over when that one
    stops or dies. Settings also come from the board's config.toml ([dispatch] table); flags win. While it runs, it
    keeps the board's newest verified backup younger than --backup-interval (in a thread of its own).

    Example:

    \b
        hermes kanban daemon
        hermes kanban daemon --max-spawn 8 --backup-interval 15m
        hermes kanban daemon --all-boards --timeout 10m
    """
    if max_spawn is not None and max_spawn_alias is not None and max_spawn != max_spawn_alias:
        raise UsageError("use either --max-spawn or --max, not both")
    if interval is not None:
        parse_duration(interval, what="--interval")  # checked, then not needed: the daemon wakes on the doorbell
    _dispatch_command(once, until_idle, max_spawn if max_spawn is not None else max_spawn_alias, failure_limit,
                      max_runtime_default, backup_interval, timeout, all_boards, board_retry, break_lock, max_age,
                      quiet, board, as_json, verb="daemon", max_start=None)


def _dispatch_command(
    once: bool, until_idle: bool, max_spawn: int | None, failure_limit: int | None, max_runtime_default: str | None,
    backup_interval: str | None, timeout: str | None, all_boards: bool, board_retry: str | None, break_lock: bool,
    max_age: str | None, quiet: bool, board: str | None, as_json: bool, *, verb: str, max_start: int | None,
) -> None:
    ctx = click.get_current_context()
    early = _StartupSignals()
    early.install()
    try:
        # Ctrl-C before the dispatcher has installed its own handlers is a KeyboardInterrupt: main() exits 130 with
        # `error: aborted` (and a JSON error on stdout with --json).
        summary = _run(once, until_idle, max_spawn, failure_limit, max_runtime_default, backup_interval, timeout,
                       all_boards, board_retry, break_lock, max_age, quiet, board, early, verb=verb,
                       max_start=max_start)
    except _StoppedEarly as stop:
        summary = _stopped_early(stop.signum, all_boards, quiet, board)
    finally:
        early.restore()
    emit(as_json, summary.as_dict(), summary.human())
    if summary.error is not None:
        # The JSON summary carries the error already; stderr gets the one `error:` line of the CLI contract.
        click.echo(f"error: {one_line(summary.error)}", err=True)
    ctx.exit(summary.exit_code)


def _dry_run(once: bool, until_idle: bool, all_boards: bool, timeout: str | None, break_lock: bool,
             max_spawn: int | None, failure_limit: int | None, max_runtime_default: str | None,
             backup_interval: str | None, max_start: int | None, board: str | None, as_json: bool) -> None:
    for name, given in (("--once", once), ("--until-idle", until_idle), ("--all-boards", all_boards),
                        ("--timeout", timeout is not None), ("--break-lock", break_lock)):
        if given:
            raise UsageError(f"--dry-run previews one pass of one board; it does not take {name}")
    from hermes_cli.kanban.dispatch.plan import plan_lines, plan_pass
    from hermes_cli.kanban.domain.config import load_settings

    flags = {"max_spawn": max_spawn, "failure_limit": failure_limit, "max_runtime_default": max_runtime_default,
             "backup_interval": backup_interval}
    with open_board(board) as b:
        plan = plan_pass(b, load_settings(b.paths, flags), limit=max_start)
    emit(as_json, plan, "\n".join(one_line(line) for line in plan_lines(plan)))


def _run(
    once: bool, until_idle: bool, max_spawn: int | None, failure_limit: int | None, max_runtime_default: str | None,
    backup_interval: str | None, timeout: str | None, all_boards: bool, board_retry: str | None, break_lock: bool,
    max_age: str | None, quiet: bool, board: str | None, early: _StartupSignals, *, verb: str,
    max_start: int | None,
) -> _Summary:
    if once and until_idle:
        raise UsageError("use either --once or --until-idle, not both")
    if max_age is not None and not break_lock:
        raise UsageError("--max-age only applies with --break-lock")
    if board_retry is not None and not all_boards:
        raise UsageError("--board-retry only applies with --all-boards")
    flags = {"max_spawn": max_spawn, "failure_limit": failure_limit, "max_runtime_default": max_runtime_default,
             "backup_interval": backup_interval}
    timeout_s = None if timeout is None else parse_duration(timeout, what="--timeout")
    if all_boards:
        slug = board_slug(board)
        if slug is not None:
            raise UsageError("use either --board or --all-boards, not both")
        from hermes_cli.kanban.dispatch.all_boards import run_all_boards

        passthrough: list[str] = []  # each board's dispatcher gets the same settings flags
        for name, value in (("--max-spawn", max_spawn), ("--max", max_start), ("--failure-limit", failure_limit),
                            ("--max-runtime-default", max_runtime_default), ("--backup-interval", backup_interval),
                            ("--timeout", timeout),
                            ("--max-age", max_age)):
            if value is not None:
                passthrough += [name, str(value)]
        for name, on in (("--once", once), ("--until-idle", until_idle), ("--break-lock", break_lock),
                         ("--quiet", quiet)):
            if on:
                passthrough.append(name)
        retry_s = 30.0 if board_retry is None else parse_duration(board_retry, what="--board-retry")
        daemon = verb == "daemon" and not (once or until_idle)
        boards = run_all_boards(passthrough, daemon=daemon, timeout=timeout_s, board_retry=retry_s, verb=verb,
                                log=_progress(f"{verb} --all-boards", quiet))
        early.hand_over()
        # Each board's own errors are in its entry (and were logged as it stopped): no extra `error:` line.
        return _Summary(boards.as_dict(), boards.lines(), boards.exit_code, None)

    from hermes_cli.kanban.dispatch.supervisor import Dispatcher
    from hermes_cli.kanban.domain.config import load_settings

    with open_board(board) as b:
        settings = load_settings(b.paths, flags)
        max_age_s = None
        if break_lock:
            max_age_s = settings.lease_grace if max_age is None else parse_duration(max_age, what="--max-age")
            if max_age_s < settings.refresh_interval:
                raise InvalidValue(
                    f"--max-age {max_age} is shorter than the lease refresh interval "
                    f"({settings.refresh_interval:g}s): a live dispatcher would look dead"
                )
        one_pass = verb == "dispatch" and not (once or until_idle)
        dispatcher = Dispatcher(b, settings, once=once, until_idle=until_idle, one_pass=one_pass,
                                max_start=max_start, timeout=timeout_s,
                                break_lock_max_age=max_age_s, log=_progress(f"dispatch {b.slug}", quiet),
                                on_signals=early.hand_over)
        result = dispatcher.run()
    return _Summary(result.as_dict(), result.lines(), result.exit_code,
                    None if result.error is None else result.error.message)


def _stopped_early(signum: int, all_boards: bool, quiet: bool, board: str | None) -> _Summary:
    """The summary of a dispatch stopped by SIGTERM/SIGHUP before it started anything (exit 0, reason `signal`)."""
    name = signal.Signals(signum).name
    log = _progress("dispatch", quiet)
    if log is not None:
        log(f"{name} while starting: stopping (nothing was started)")
    if all_boards:
        from hermes_cli.kanban.dispatch.all_boards import AllBoardsResult

        boards = AllBoardsResult()
        return _Summary(boards.as_dict(), [f"stopped by {name} while starting"], 0, None)
    from hermes_cli.kanban.core.paths import DEFAULT_BOARD
    from hermes_cli.kanban.dispatch.result import DispatchResult, StopReason

    slug = board_slug(board) or os.environ.get("HERMES_KANBAN_BOARD") or DEFAULT_BOARD
    res = DispatchResult(board=slug, reason=StopReason.SIGNAL,
                         message=f"stopped by {name} while starting; nothing was started")
    res.stopped_at = time.time()
    return _Summary(res.as_dict(), res.lines(), 0, None)


@dataclass(frozen=True)
class _Summary:
    """What `dispatch` prints when it stops: the summary (JSON or text), its exit code and error, if any."""

    data: dict[str, Any]
    lines: list[str]
    exit_code: int
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return self.data

    def human(self) -> str:
        return "\n".join(one_line(line) for line in self.lines)


@command("demo")
@click.option("--keep", is_flag=True, help="Keep the demo's HERMES_HOME (a temp dir) and say where it is.")
@click.option("--postgres", is_flag=True,
              help="Run it on a throwaway PostgreSQL server with two dispatchers (two HERMES_HOMEs standing in for "
                   "two hosts); needs the server binaries (system PostgreSQL, or the postgres-server extra).")
@json_option
def kanban_demo(keep: bool, postgres: bool, as_json: bool) -> None:
    """Run a throwaway board with ~10 tasks through the dispatcher and real worker processes, then print what
    happened: a dependency chain, a crash and its retry, a timeout, a worker that reports by itself. Never
    touches your boards (it works in a temp dir); takes a few seconds.

    Example:

    \b
        hermes kanban demo
        hermes kanban demo --keep --json
        hermes kanban demo --postgres
    """
    started = time.time()
    quiet_log = None if as_json else (lambda line: click.echo(line, err=True))
    report: Any
    if postgres:
        from hermes_cli.kanban.demo.postgres import run_postgres_demo

        report = run_postgres_demo(keep=keep, log=quiet_log)
    else:
        from hermes_cli.kanban.demo.run import run_demo

        report = run_demo(keep=keep, log=quiet_log)
    if as_json:
        click.echo(json.dumps(report.as_dict(), default=str))
    else:
        click.echo(report.human(time.time() - started))
    if not report.ok:
        click.echo(f"error: {one_line('demo outcome differs from what was expected: ' + '; '.join(report.problems))}",
                   err=True)
        click.get_current_context().exit(1)
