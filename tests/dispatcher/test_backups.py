"""The dispatcher's periodic backups (hermes_cli/kanban/dispatch/backups.py, docs/dispatcher.md "Automatic backups").

Real dispatchers (CLI processes, or the Dispatcher class in a thread of the test), real boards, real backup files
checked with integrity_check. No timing assertions: "a backup never holds up a spawn" is shown by holding the backup
thread inside its attempt (its log line blocks) while a task is created, spawned and finished.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hermes_cli.kanban import Board, InvalidValue
from hermes_cli.kanban.core.paths import resolve
from hermes_cli.kanban.dispatch.backups import Abandoned, AutoBackup
from hermes_cli.kanban.dispatch.result import DispatchResult, StopReason
from hermes_cli.kanban.dispatch.supervisor import Dispatcher
from hermes_cli.kanban.domain.config import load_settings
from hermes_cli.kanban.durability import backup
from hermes_cli.kanban.durability import doctor as health
from hermes_cli.kanban.store import health as store_health

from .conftest import HERMES, Reaper, configure, pycmd, wait_for

BACKUP_LINE = re.compile(r"^\S+ dispatch default: backup: (\S+) \(\d+(?:\.\d)? (?:B|KiB|MiB|GiB), \d+\.\d{3}s\)$")


def hermes(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERMES, "kanban", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def backup_lines(stderr: str) -> list[Path]:
    return [Path(m.group(1)) for line in stderr.splitlines() if (m := BACKUP_LINE.match(line))]


def backup_dir_files(board: Board) -> list[str]:
    d = board.paths.backups_dir
    return sorted(os.listdir(d)) if d.is_dir() else []


def assert_verified(path: Path, tasks: int) -> None:
    assert store_health.verify_file(path) == []  # integrity_check of the file itself, read-only
    assert store_health.read_backup_summary(path)["tasks"] == tasks
    assert backup.latest(resolve("default")).path == path


# -- settings ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "flag", "expected"),
    [
        (None, None, 3600.0),
        ("2h", None, 7200.0),
        ("off", None, None),
        ("OFF", None, None),
        (0, None, None),
        ("0s", None, None),
        ("off", "1s", 1.0),
        ("1h", "0", None),
        ("1h", "off", None),
        (90, None, 90.0),
    ],
)
def test_backup_interval_from_config_and_flag(board: Board, config: Any, flag: str | None,
                                              expected: float | None) -> None:
    if config is not None:
        configure(board, backup_interval=config)
    assert load_settings(board.paths, {"backup_interval": flag}).backup_interval == expected


def test_bad_backup_interval_values_are_named(board: Board) -> None:
    configure(board, fast=False, backup_interval="soon")
    with pytest.raises(InvalidValue) as err:
        load_settings(board.paths)
    assert err.value.message == (
        f"config {board.paths.config_file}: backup_interval must be a duration like 30m or 1h (at most 365d), or "
        "\"off\" (or 0) for no automatic backups, got 'soon'"
    )
    configure(board, fast=False, backup_interval=True)
    with pytest.raises(InvalidValue) as err:
        load_settings(board.paths)
    assert err.value.message == (f"config {board.paths.config_file}: backup_interval must be a duration like 1h, "
                                 "or \"off\", got True")
    board.paths.config_file.unlink()
    before = board.last_event_id()
    p = hermes("dispatch", "--once", "--backup-interval", "-5m")
    assert (p.returncode, p.stderr) == (1, "error: invalid --backup-interval '-5m': must be a duration like 30m or "
                                           "1h (at most 365d), or \"off\" (or 0) for no automatic backups\n")
    assert board.last_event_id() == before and backup_dir_files(board) == []


# -- taking them ------------------------------------------------------------------------------------------------------
def test_until_idle_takes_one_verified_backup_then_none_while_it_is_young(board: Board) -> None:
    t, _ = board.create_task("quick", command="true")
    p = hermes("dispatch", "--until-idle", "--backup-interval", "1s", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["reason"], out["completed"], out["backups"], out["backup_failed"]) == ("idle", 1, 1, 0)
    [path] = backup_lines(p.stderr)
    assert_verified(path, tasks=1)
    assert backup_dir_files(board) == sorted([path.name, path.name + ".json"])  # no temp file, no sidecar
    assert json.loads((path.parent / (path.name + ".json")).read_text())["reason"] == "dispatcher"
    # The newest backup is younger than the interval (1h by default): a second dispatcher takes none.
    p = hermes("dispatch", "--until-idle", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["backups"] == 0 and backup_lines(p.stderr) == []
    assert len(backup.list_backups(board.paths)) == 1


def test_a_short_timeout_takes_verified_backups_and_reports_each(board: Board) -> None:
    p = hermes("daemon", "--timeout", "1500ms", "--backup-interval", "1s", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    paths = backup_lines(p.stderr)
    assert out["reason"] == "timeout" and out["backups"] == len(paths) >= 1 and out["backup_failed"] == 0
    for path in paths:
        assert store_health.verify_file(path) == []
    assert [b.path for b in backup.list_backups(board.paths)] == sorted(paths, reverse=True)


def test_a_backup_someone_else_took_counts(board: Board) -> None:
    assert hermes("backup").returncode == 0
    p = hermes("dispatch", "--until-idle", "--json")
    assert json.loads(p.stdout)["backups"] == 0 and len(backup.list_backups(board.paths)) == 1


@pytest.mark.parametrize("how", ["flag", "config", "config zero"])
def test_off_takes_none(board: Board, how: str) -> None:
    board.create_task("quick", command="true")
    args = ["dispatch", "--until-idle", "--json"]
    if how == "flag":
        configure(board, backup_interval="1s")
        args += ["--backup-interval", "off"]
    else:
        configure(board, backup_interval="off" if how == "config" else 0)
    p = hermes(*args)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["completed"], out["backups"], out["backup_failed"]) == (1, 0, 0)
    assert backup_dir_files(board) == [] and "backup" not in p.stderr


def test_all_boards_passes_the_interval_on(board: Board) -> None:
    assert hermes("boards", "create", "side").returncode == 0
    p = hermes("dispatch", "--all-boards", "--until-idle", "--backup-interval", "off")
    assert p.returncode == 0, p.stderr
    assert backup_dir_files(board) == [] and not resolve("side").backups_dir.exists()
    p = hermes("dispatch", "--all-boards", "--until-idle")  # the default, 1h: both boards are due
    assert p.returncode == 0, p.stderr
    for slug in ("default", "side"):
        [b] = backup.list_backups(resolve(slug))
        assert b.verified and b.reason == "dispatcher" and store_health.verify_file(b.path) == []


# -- never in the way -------------------------------------------------------------------------------------------------
class HeldBackup:
    """A dispatcher in a thread of this process whose backup thread is held inside its attempt: its `backup:` log
    line (written while the attempt is still under way) blocks until `release`."""

    def __init__(self, board: Board, **kw: Any) -> None:
        self.lines: list[tuple[str, str]] = []
        self.held = threading.Event()
        self.release = threading.Event()
        self.result: DispatchResult | None = None
        self.paths = board.paths
        self.kw = kw
        self.thread = threading.Thread(target=self._run, name="dispatcher-under-test")

    def log(self, message: str) -> None:
        self.lines.append((threading.current_thread().name, message))
        if message.startswith("backup: "):
            self.held.set()
            assert self.release.wait(40), "the test never released the backup"

    def _run(self) -> None:
        with Board.open() as b:
            settings = load_settings(b.paths, {"backup_interval": "1s"})
            self.result = Dispatcher(b, settings, log=self.log, timeout=30, **self.kw).run()

    def said(self, text: str) -> list[str]:
        return [thread for thread, message in self.lines if text in message]

    def __enter__(self) -> HeldBackup:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(60)


def db_fds(db: Path) -> int:
    """File descriptors of this process on the board's db file: one per SQLite connection opened to it."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.path.realpath(f"/proc/self/fd/{fd}") == str(db.resolve())
        except FileNotFoundError:
            continue  # the listdir's own fd, closed by now
    return n


def test_a_backup_in_progress_never_holds_up_a_spawn(board: Board, tmp_path: Path) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    # Keeps the dispatcher from going idle until the end of the test: reads a FIFO nobody writes to yet.
    holder, _ = board.create_task("holder", command=pycmd("import sys; open(sys.argv[1]).read()", str(fifo)))
    before = db_fds(board.paths.db)
    with HeldBackup(board, until_idle=True) as d:
        try:
            assert d.held.wait(30), d.lines
            # Held inside its attempt, the backup thread has a connection of its own: the dispatcher's loop and its
            # heartbeat have one each, so three new connections to the board in this process, not two.
            wait_for(lambda: db_fds(board.paths.db) == before + 3, what="three connections to the board")
            t, _ = board.create_task("ready while a backup runs", command="true")
            wait_for(lambda: board.get_task(t.id).status == "done", what="the task to be spawned and to complete")
            assert not d.release.is_set() and d.thread.is_alive()  # all of that while the backup was still held
            assert d.said(f"spawned {t.id}") == ["dispatcher-under-test"]
            assert d.said("backup: ") == ["dispatcher-backup"]
            wait_for(lambda: board.get_task(holder.id).status == "running", what="the holder's worker")
        finally:
            # EOF for the holder (blocked opening the FIFO), so the dispatcher goes idle; if it never got that far,
            # the dispatcher's own timeout ends the test's thread and the reaper kills the holder.
            # "running" is recorded before the worker's interpreter has opened the FIFO: on a loaded machine that
            # takes a while, so keep knocking (ENXIO = no reader yet) for a bounded time.
            deadline = time.monotonic() + 15
            while True:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        print(f"the holder was not waiting on the FIFO: {exc}")
                        break
                    time.sleep(0.05)
    assert d.result is not None and d.result.reason == StopReason.IDLE, d.lines
    assert (d.result.counts["completed"], d.result.counts["backups"]) == (2, 1)
    assert store_health.verify_file(backup.latest(board.paths).path) == []


def test_a_graceful_stop_waits_for_the_backup_in_progress(board: Board) -> None:
    with HeldBackup(board, until_idle=True) as d:
        assert d.held.wait(30), d.lines
        # The board is idle at once: the dispatcher stops, and waits for the backup it started.
        wait_for(lambda: d.said("waiting for the backup in progress to finish"), what="the stop to wait")
        assert d.thread.is_alive() and backup.list_backups(board.paths)[0].verified
        lease = board.db.value("SELECT count(*) FROM dispatcher_lease")
        assert lease == 1  # not released yet: it still holds the board
    assert d.result is not None and d.result.reason == StopReason.IDLE
    assert d.result.counts["backups"] == 1 and board.db.value("SELECT count(*) FROM dispatcher_lease") == 0


def test_an_abandoned_backup_leaves_no_temp_file(board: Board) -> None:
    board.create_task("something to copy")
    kept = backup.create(board).path
    ab = AutoBackup(board.paths, 1.0, log=lambda _m: None)
    ab.stop(abandon=True)
    # The copy calls the progress hook after each step; abandoning raises out of it, between steps.
    with pytest.raises(Abandoned):
        backup.create(board, reason="dispatcher", progress=ab.progress)
    assert backup_dir_files(board) == sorted([kept.name, kept.name + ".json"])  # no temp file, no journal


# -- failures ---------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_a_failing_backup_warns_and_the_dispatcher_keeps_dispatching(board: Board, reaper: Reaper) -> None:
    backups = board.paths.backups_dir
    backups.write_text("not a directory\n")
    d = reaper.hermes("kanban", "daemon", "--backup-interval", "1s", "--json")
    warning = (f"warning: backup failed: {backups} exists and is not a directory (move it aside and retry); "
               "next attempt in 1s")
    wait_for(lambda: sum(warning in line for line in d.stderr().splitlines()) >= 2, what="two failed attempts")
    t, _ = board.create_task("after the failures", command="true")
    wait_for(lambda: board.get_task(t.id).status == "done", what="the task to be dispatched")
    d.popen.send_signal(signal.SIGTERM)
    rc, out, err = d.finish()
    assert rc == 0 and out["reason"] == "signal", err
    assert (out["spawned"], out["completed"], out["backups"]) == (1, 1, 0)
    warnings = [line for line in err.splitlines() if "backup failed" in line]
    assert len(warnings) == out["backup_failed"] >= 2 and all(line.endswith(warning) for line in warnings)
    assert backups.read_text() == "not a directory\n"
    assert [p.name for p in board.paths.dir.iterdir() if ".tmp-" in p.name] == []
    # Fixed: the next dispatcher takes its backup.
    backups.unlink()
    p = hermes("dispatch", "--until-idle", "--backup-interval", "1s", "--json")
    assert json.loads(p.stdout)["backups"] == 1 and backup.latest(board.paths).verified


def test_retry_delay_doubles_up_to_the_interval(board: Board) -> None:
    lines: list[str] = []
    ab = AutoBackup(board.paths, 300.0, log=lines.append)
    board.paths.backups_dir.write_text("")
    delays = []
    for _ in range(4):
        assert ab.attempt() is False
        delays.append(ab.retry_delay())
    assert delays == [60.0, 120.0, 240.0, 300.0]
    assert [line.rsplit("next attempt in ", 1)[1] for line in lines] == ["1m", "2m", "4m", "5m"]
    assert ab.failed == 4 and ab.taken == 0
    board.paths.backups_dir.unlink()
    assert ab.attempt() is True and ab.taken == 1 and ab.retry_delay() == 60.0


# -- doctor -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("interval", "age_h", "level"),
    [(None, 23, "ok"), (None, 25, "warn"), ("off", 25, "warn"), ("2d", 30, "ok"), ("2d", 97, "warn"),
     ("10m", 23, "ok")],
)
def test_doctor_backup_age_agrees_with_the_interval(board: Board, interval: str | None, age_h: float,
                                                    level: str) -> None:
    if interval is not None:
        configure(board, fast=False, backup_interval=interval)
    info = backup.create(board)
    report = health.doctor(board.paths, now=info.created_at + age_h * 3600)
    [finding] = [f for f in report.findings if f.check == "backup"]
    assert finding.level == level, finding
    settings = load_settings(board.paths)
    assert finding.data["max_age_s"] == health.backup_max_age(settings.backup_interval)



@pytest.mark.parametrize("meta", ["[]", '{"created_at_ts": "yesterday"}', "not json", '{"created_at_ts": true}'])
def test_a_damaged_backup_metadata_file_never_stops_listing_doctor_or_the_dispatcher(board: Board, meta: str) -> None:
    """One bad `.json` beside a backup once made `backups list`, doctor and the dispatcher fail with a traceback."""
    taken = backup.create(board)
    Path(f"{taken.path}.json").write_text(meta, encoding="utf-8")
    listed = hermes("backups", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(b["path"], b["verified"]) for b in json.loads(listed.stdout)] == [(str(taken.path), False)]
    assert "Traceback" not in hermes("doctor").stderr
    ran = hermes("dispatch", "--until-idle", "--quiet", "--backup-interval", "1h", "--json")
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
