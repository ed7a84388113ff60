"""The spool's exact rules, pinned down where mutation testing (bench/mutation.sh spool, docs/mutation.md) found
that no test would notice a change: the bounds of run ids, file sizes and timestamps, what a spool file holds, the
names archived files get, the order reports are read in, and what a drain remembers between ticks.

Fast, in-process tests (no worker processes): they are the first thing the mutation run executes for every mutant.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from hermes_cli.kanban import Board, InvalidValue, StorageError
from hermes_cli.kanban.core.paths import BoardPaths
from hermes_cli.kanban.durability import drain, spool

from .conftest import checkpoint_and_close

TASK = "t_0123456789ab"
#: SQLite's largest rowid: run ids are rowids, so this is the largest run id a board can hand out
MAX_ROWID = 2**63 - 1
#: the bound on a spool file read back (spool.MAX_FILE); written out here so a change to it is seen
FOUR_MIB = 4 * 1024 * 1024


@pytest.fixture
def paths(paths: BoardPaths) -> BoardPaths:
    """The default board, created: its reports spool beside it (a board that does not exist spools to the host
    spool under HERMES_HOME instead, see spool.spool_dir_for)."""
    Board.open().close()
    return paths


def write_raw(paths: BoardPaths, name: str, data: object, pad_to: int | None = None) -> Path:
    paths.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    raw = json.dumps(data).encode()
    if pad_to is not None:
        # JSON allows leading whitespace: the file is valid, only large, and its last byte is the closing brace
        raw = b" " * (pad_to - len(raw)) + raw
    path = paths.spool_dir / name
    path.write_bytes(raw)
    return path


def report_dict(**over: object) -> dict[str, object]:
    return {"format": 1, "kind": "complete", "task_id": TASK, "run_id": 3, "summary": "s", "force": False,
            "spooled_at": 1_700_000_000.0, "source": "spooled", "error": None, **over}


# -- run ids -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("run_id", [1, 2, MAX_ROWID])
def test_run_ids_from_one_to_the_largest_rowid_are_accepted(run_id: int) -> None:
    assert spool.check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", [0, -1, MAX_ROWID + 1, True, False, 1.0, "1"])
def test_other_run_ids_are_refused(run_id: object) -> None:
    with pytest.raises(InvalidValue, match=f"run ids are whole numbers from 1 to {MAX_ROWID}"):
        spool.check_run_id(run_id)


def test_a_report_without_a_run_is_a_persons_report() -> None:
    assert spool.check_run_id(None) is None
    assert spool.file_name(TASK, None) == f"{TASK}.manual.json"
    assert spool.file_name(TASK, 7) == f"{TASK}.7.json"


# -- summaries ---------------------------------------------------------------------------------------------------------
def test_a_summary_up_to_the_body_limit_is_accepted_and_one_more_character_is_not() -> None:
    assert spool.check_summary("x" * 1_000_000) == "x" * 1_000_000
    with pytest.raises(InvalidValue, match="the summary is 1000001 characters; the limit is 1000000"):
        spool.check_summary("x" * 1_000_001)


def test_a_summary_that_is_not_utf8_names_the_text_around_the_bad_character() -> None:
    text = "a" * 30 + "\udc80" + "b" * 30
    with pytest.raises(InvalidValue) as exc:
        spool.check_summary(text)
    assert exc.value.message.startswith(f"invalid summary {'a' * 20 + chr(0xDC80) + 'b' * 20!r}: it is not valid UTF-8")
    near_start = "\udc80" + "b" * 30
    with pytest.raises(InvalidValue) as exc:
        spool.check_report("block", TASK, 1, near_start)
    assert exc.value.message.startswith(f"invalid reason {chr(0xDC80) + 'b' * 20!r}: it is not valid UTF-8")


def test_a_summary_must_be_text() -> None:
    with pytest.raises(InvalidValue, match="invalid summary 5: it must be text"):
        spool.check_summary(5)


# -- the file on disk --------------------------------------------------------------------------------------------------
def test_a_spool_file_holds_the_whole_report_privately(paths: BoardPaths) -> None:
    before = time.time()
    err = StorageError("disk on fire")
    report, wrote = spool.spool_report(paths, "block", TASK, 9, summary="needs a key", force=True, error=err,
                                       source="salvaged")
    assert wrote and report.path == paths.spool_dir / f"{TASK}.9.json"
    data = json.loads(report.path.read_text())
    assert data == {
        "format": 1, "kind": "block", "task_id": TASK, "run_id": 9, "summary": "needs a key", "force": True,
        "spooled_at": data["spooled_at"], "source": "salvaged", "error": {"code": err.code, "message": "disk on fire"},
        "board": "default", "db": str(paths.db), "host": socket.gethostname(), "pid": os.getpid(),
    }
    assert before <= data["spooled_at"] <= time.time()
    assert stat.S_IMODE(report.path.stat().st_mode) == 0o600
    assert [p.name for p in paths.spool_dir.iterdir()] == [report.path.name]  # no temporary file left behind
    back = spool.read_report(report.path)
    assert back == report  # what is read back is what was written


def test_a_repeated_report_is_the_one_already_spooled(paths: BoardPaths) -> None:
    first, wrote = spool.spool_report(paths, "complete", TASK, 4, summary="s")
    again, wrote_again = spool.spool_report(paths, "complete", TASK, 4, summary="s")
    assert wrote and not wrote_again
    assert again == first  # the first one's time and all, not the second call's
    assert first.force is False and json.loads(first.path.read_text())["force"] is False  # not forced by default


def test_a_spool_file_that_cannot_be_read_is_a_storage_error_not_a_conflict(paths: BoardPaths) -> None:
    write_raw(paths, f"{TASK}.4.json", ["not", "a", "report"])
    with pytest.raises(StorageError, match="exists but is unreadable .not a spool report"):
        spool.spool_report(paths, "complete", TASK, 4, summary="s")


def test_the_largest_readable_file_is_four_mib(paths: BoardPaths) -> None:
    at_limit = write_raw(paths, f"{TASK}.1.json", report_dict(run_id=1), pad_to=FOUR_MIB)
    over = write_raw(paths, f"{TASK}.2.json", report_dict(run_id=2), pad_to=FOUR_MIB + 1)
    got = spool.read_report(at_limit)
    assert isinstance(got, spool.SpooledReport) and got.run_id == 1
    assert spool.read_report(over) == f"too large ({FOUR_MIB + 1} bytes)"


@pytest.mark.parametrize("spooled_at", [0, 0.0, 1.5, 99_999_999_999.0])
def test_spooled_at_in_range_is_kept(paths: BoardPaths, spooled_at: float) -> None:
    got = spool.read_report(write_raw(paths, f"{TASK}.3.json", report_dict(spooled_at=spooled_at)))
    assert isinstance(got, spool.SpooledReport) and got.spooled_at == spooled_at


@pytest.mark.parametrize("spooled_at", [-0.5, 1e11, math.inf])
def test_spooled_at_out_of_range_makes_the_file_invalid(paths: BoardPaths, spooled_at: float) -> None:
    got = spool.read_report(write_raw(paths, f"{TASK}.3.json", report_dict(spooled_at=spooled_at)))
    assert got == f"invalid spooled_at {spooled_at!r}"


def test_a_file_without_spooled_at_or_source_gets_the_defaults(paths: BoardPaths) -> None:
    data = report_dict()
    for key in ("spooled_at", "source", "force", "error"):
        del data[key]
    got = spool.read_report(write_raw(paths, f"{TASK}.3.json", data))
    assert isinstance(got, spool.SpooledReport)
    assert (got.spooled_at, got.source, got.force, got.error) == (0.0, "spooled", False, None)


def test_an_error_that_is_not_an_object_is_dropped(paths: BoardPaths) -> None:
    got = spool.read_report(write_raw(paths, f"{TASK}.3.json", report_dict(error="boom", force=1)))
    assert isinstance(got, spool.SpooledReport) and got.error is None and got.force is True


@pytest.mark.parametrize(("data", "problem"), [
    ([1, 2], "not a spool report (not a JSON object)"),
    ({"task_id": TASK}, "not a spool report (KeyError: 'kind')"),
    (report_dict(kind="archive"), "cannot spool a 'archive' report: only complete, block"),
    (report_dict(spooled_at="soon"), "not a spool report (ValueError: could not convert string to float: 'soon')"),
    (report_dict(spooled_at=[1]), "not a spool report (TypeError: float() argument must be a string or a real "
                                  "number, not 'list')"),
    (report_dict(spooled_at=10**400), "not a spool report (OverflowError: int too large to convert to float)"),
])
def test_files_that_are_not_reports_say_why(paths: BoardPaths, data: object, problem: str) -> None:
    assert spool.read_report(write_raw(paths, f"{TASK}.3.json", data)) == problem


def test_a_directory_in_the_spool_is_not_a_report(paths: BoardPaths) -> None:
    (paths.spool_dir / f"{TASK}.3.json").mkdir(parents=True)
    assert spool.read_report(paths.spool_dir / f"{TASK}.3.json") == "not a regular file"


# -- reading the spool -------------------------------------------------------------------------------------------------
def test_pending_reads_reports_oldest_first_and_ignores_other_files(paths: BoardPaths) -> None:
    write_raw(paths, f"{TASK}.1.json", report_dict(run_id=1, spooled_at=30.0))
    write_raw(paths, f"{TASK}.2.json", report_dict(run_id=2, spooled_at=10.0))
    write_raw(paths, f"{TASK}.3.json", report_dict(run_id=3, spooled_at=10.0))  # same time: by name
    write_raw(paths, ".tmp-1-abc.json", report_dict(run_id=4))  # a writer's temporary file
    write_raw(paths, "notes.txt", "not a report")
    bad = write_raw(paths, f"{TASK}.5.json", [])
    reports, invalid = spool.pending(paths)
    assert [r.run_id for r in reports] == [2, 3, 1]
    assert invalid == [{"file": str(bad), "problem": "not a spool report (not a JSON object)"}]
    assert spool.backlog(paths) == 4


def test_an_empty_or_missing_spool_is_no_backlog(paths: BoardPaths) -> None:
    assert spool.backlog(paths) == 0 and spool.pending(paths) == ([], [])
    assert spool.set_aside_files(paths) == []


# -- filing reports away -----------------------------------------------------------------------------------------------
def test_archiving_never_overwrites_an_archived_file(paths: BoardPaths) -> None:
    names = []
    for _ in range(3):
        report, _ = spool.spool_report(paths, "complete", TASK, 5, summary="s")
        target = spool.archive(paths, report, spool.SKIPPED)
        assert target is not None
        names.append(target.name)
    assert names == [f"{TASK}.5.json", f"{TASK}.5.1.json", f"{TASK}.5.2.json"]
    assert spool.backlog(paths) == 0
    assert spool.archive(paths, report) is None  # already filed: nothing to move


def test_set_aside_keeps_the_file_and_says_why(paths: BoardPaths) -> None:
    bad = write_raw(paths, f"{TASK}.6.json", [])
    moved = spool.set_aside(paths, bad, "not a spool report")
    assert moved == paths.spool_dir / "invalid" / bad.name
    assert json.loads(moved.read_text()) == []
    reason = json.loads((moved.parent / f"{bad.name}.reason.json").read_text())
    assert (reason["file"], reason["was"], reason["problem"]) == (bad.name, str(bad), "not a spool report")
    assert spool.set_aside_files(paths) == [str(moved)]
    assert spool.set_aside(paths, bad, "again") is None
    (moved.parent / ".tmp-123-abc").write_text("{}")  # a writer's temporary file is not a set-aside file
    assert spool.set_aside_files(paths) == [str(moved)]


def test_an_invalid_dir_that_is_not_a_directory_holds_no_set_aside_files(paths: BoardPaths) -> None:
    paths.spool_dir.mkdir(mode=0o700, parents=True)
    (paths.spool_dir / spool.INVALID).write_text("not a directory")
    assert spool.set_aside_files(paths) == []


# -- the dispatcher's drain --------------------------------------------------------------------------------------------
def test_a_drain_that_applied_nothing_is_not_repeated_until_something_changes(
    paths: BoardPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hermes_cli.kanban.durability import reconcile

    calls: list[int] = []
    real_apply = reconcile.apply

    def counting_apply(board: Board, **kw: object) -> reconcile.ApplyResult:
        calls.append(1)
        return real_apply(board, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(reconcile, "apply", counting_apply)
    lines: list[str] = []
    with Board.open() as b:
        t, _ = b.create_task("held by another run")
        c = b.claim(t.id, worker="w")
        assert c is not None
        spool.spool_report(paths, "complete", t.id, c.run_id + 1000, summary="a stale run")  # a conflict
        assert drain.drain_if_healthy(b, lines.append) == 0
        assert drain.drain_if_healthy(b, lines.append) == 0
        assert len(calls) == 1  # the second tick saw the same spool and board: no second apply
        b.create_task("the board changed")
        assert drain.drain_if_healthy(b, lines.append) == 0
        assert len(calls) == 2
        spool.spool_report(paths, "complete", t.id, c.run_id, summary="the current run")
        assert drain.drain_if_healthy(b, lines.append) == 1
        assert b.get_task(t.id).status == "done"
    assert lines == []  # conflicts are not warnings: they wait for a person


def test_a_spooled_report_is_immutable(paths: BoardPaths) -> None:
    report, _ = spool.spool_report(paths, "complete", TASK, 4, summary="s")
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.summary = "changed"  # type: ignore[misc]


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def _spool_one_report(paths: BoardPaths) -> str:
    with Board.open() as b:
        t, _ = b.create_task("x")
        c = b.claim(t.id, worker="w")
        assert c is not None
    spool.spool_report(paths, "complete", t.id, c.run_id, summary="done while the board was unwritable")
    return t.id


def test_a_drain_leaves_the_spool_alone_on_a_read_only_board(paths: BoardPaths) -> None:
    """Root ignores file modes, so the board is made immutable (chattr +i): SQLite then opens it read-only."""
    task_id = _spool_one_report(paths)
    checkpoint_and_close(paths.db)
    if shutil.which("chattr") is None or not _chattr("+i", paths.db):
        pytest.skip("chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE on ext2/3/4, xfs, btrfs)")
    lines: list[str] = []
    try:
        with Board.open() as b:
            assert drain.drain_if_healthy(b, lines.append) == 0
            assert b.get_task(task_id).status == "running"
    finally:
        assert _chattr("-i", paths.db)
    assert spool.backlog(paths) == 1 and lines == []


def test_a_drain_that_cannot_file_the_report_away_logs_and_never_raises(paths: BoardPaths) -> None:
    """An OSError from the spool itself (here: spool/applied/ is immutable, so the applied file cannot move into
    it) is logged and the dispatcher's tick goes on."""
    _spool_one_report(paths)
    applied = paths.spool_dir / spool.APPLIED
    applied.mkdir(mode=0o700)
    if shutil.which("chattr") is None or not _chattr("+i", applied):
        pytest.skip("chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE on ext2/3/4, xfs, btrfs)")
    lines: list[str] = []
    try:
        with Board.open() as b:
            assert drain.drain_if_healthy(b, lines.append) == 0
    finally:
        assert _chattr("-i", applied)
    assert len(lines) == 1 and lines[0].startswith("warning: the spool of board default was not applied: ")
    assert "PermissionError" in lines[0]
    assert spool.backlog(paths) == 1  # still pending: the next tick files it (as already applied)


def test_a_drain_the_board_refuses_is_logged_once_and_applies_nothing(
    paths: BoardPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = _spool_one_report(paths)
    monkeypatch.setenv("HERMES_KANBAN_BACKUP_KEEP", "many")  # the apply's backup step refuses the setting
    lines: list[str] = []
    with Board.open() as b:
        assert drain.drain_if_healthy(b, lines.append) == 0
        assert drain.drain_if_healthy(b, lines.append) == 0
        assert b.get_task(task_id).status == "running"
    assert len(lines) == 1 and "HERMES_KANBAN_BACKUP_KEEP='many'" in lines[0]
    assert lines[0].endswith("(see: hermes kanban reconcile-completions)")


def test_a_spool_that_cannot_be_written_says_the_report_was_not_saved(paths: BoardPaths) -> None:
    paths.spool_dir.mkdir(mode=0o700, parents=True)
    if shutil.which("chattr") is None or not _chattr("+i", paths.spool_dir):
        pytest.skip("chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE on ext2/3/4, xfs, btrfs)")
    try:
        with pytest.raises(StorageError) as exc:
            spool.spool_report(paths, "complete", TASK, 4, summary="s")
    finally:
        assert _chattr("-i", paths.spool_dir)
    assert exc.value.message == (
        f"cannot write the spool {paths.spool_dir} (Operation not permitted); the complete report for {TASK} was NOT "
        "saved: retry the command once the disk is writable")
    assert list(paths.spool_dir.iterdir()) == []


def test_a_drain_warns_about_each_file_it_set_aside(paths: BoardPaths) -> None:
    task_id = _spool_one_report(paths)
    bad = write_raw(paths, f"{TASK}.9.json", [])
    lines: list[str] = []
    with Board.open() as b:
        assert drain.drain_if_healthy(b, lines.append) == 1
        assert b.get_task(task_id).status == "done"
    assert lines == [f"warning: {bad} is not a valid report (not a spool report (not a JSON object)); moved to "
                     f"{paths.spool_dir / spool.INVALID / bad.name}"]


def test_a_spool_entry_that_cannot_be_opened_says_why(paths: BoardPaths, tmp_path: Path) -> None:
    paths.spool_dir.mkdir(mode=0o700, parents=True)
    link = paths.spool_dir / f"{TASK}.3.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    assert spool.read_report(link) == "cannot open (Too many levels of symbolic links)"


def test_a_drain_of_an_empty_spool_says_nothing(paths: BoardPaths) -> None:
    lines: list[str] = []
    with Board.open() as b:
        assert drain.drain_if_healthy(b, lines.append) == 0
    assert lines == [] and not paths.spool_dir.exists()
