"""Store contract: opening a board (version gate, pragmas, refusing what is not a board), file modes, and the
write path (BEGIN IMMEDIATE, bounded BUSY retry, events in the same transaction as the change)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import apsw
import pytest

from hermes_cli.kanban import Board, BoardBusy, CorruptBoard, HermesError, StorageError
from hermes_cli.kanban.core.errors import InvalidValue, UnsupportedSQLite
from hermes_cli.kanban.core.paths import boards_root
from hermes_cli.kanban.store import connection
from hermes_cli.kanban.store.schema import LATEST

from .conftest import dump_board

#: this module tests the SQLite connection itself (pragmas, busy handling, the open-lock)
pytestmark = pytest.mark.sqlite_only



def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def pragma(board: Board, name: str) -> object:
    return board.db.value(f"PRAGMA {name}")


# -- the SQLite version gate -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ((3, 51, 2), False), ((3, 51, 3), True), ((3, 52, 0), True), ((4, 0, 0), True),
        ((3, 50, 6), False), ((3, 50, 7), True), ((3, 50, 9), True),
        ((3, 44, 5), False), ((3, 44, 6), True), ((3, 45, 0), False), ((3, 40, 1), False),
    ],
)
def test_version_gate_table(version: tuple[int, int, int], ok: bool) -> None:
    assert connection.version_ok(version) is ok


def test_bundled_sqlite_passes_the_gate() -> None:
    assert connection.version_ok(connection.sqlite_version())
    connection.check_sqlite_version()


def test_old_sqlite_is_refused_before_anything_is_created(monkeypatch: pytest.MonkeyPatch, hermes_home: Path) -> None:
    # No older SQLite can be loaded into this process next to APSW's, so the version APSW reports is substituted.
    monkeypatch.setattr(apsw, "sqlite_lib_version", lambda: "3.50.4")
    with pytest.raises(UnsupportedSQLite) as err:
        Board.open()
    assert err.value.exit_code == 4
    assert err.value.message == (
        "SQLite 3.50.4 has the WAL-reset corruption bug; need >= 3.51.3 (or 3.50.7 / 3.44.6) (see: pip install -U apsw)"
    )
    assert not hermes_home.exists()


# -- pragmas -----------------------------------------------------------------------------------------------------------
def test_pragmas_of_a_default_board(board: Board) -> None:
    assert pragma(board, "journal_mode") == "wal"
    # FULL by group commit: SQLite commits at NORMAL and Database.write syncs the WAL after COMMIT (wal_sync.py)
    assert (pragma(board, "synchronous"), board.db.group_commit) == (1, True)
    assert pragma(board, "foreign_keys") == 1
    assert pragma(board, "mmap_size") == 0
    assert pragma(board, "journal_size_limit") == 64 * 1024 * 1024  # was -1 while set in one multi-statement string
    # Busy waits go through our own polling handler (connection.fair_busy_handler), not SQLite's busy_timeout.
    assert pragma(board, "busy_timeout") == 0
    assert pragma(board, "user_version") == LATEST


def test_the_busy_handler_waits_for_a_held_write_lock_instead_of_failing(board: Board, lock_holder) -> None:
    """Another process holds the write lock for a moment: the write waits inside one attempt and then lands."""
    import threading

    holder = lock_holder(board.paths.db)
    release = threading.Timer(0.3, holder.release)
    release.start()
    attempts: list[str] = []
    board.db.conn.exec_trace = lambda cursor, sql, bindings: attempts.append(sql) or True
    task, created = board.create_task("after the wait")
    board.db.conn.exec_trace = None
    release.join()
    assert created and board.get_task(task.id).title == "after the wait"
    assert sum(s.startswith("BEGIN IMMEDIATE") for s in attempts) == 1


@pytest.mark.parametrize(("setting", "level"), [("normal", 1), ("full", 2), ("extra", 3), (" NORMAL ", 1)])
def test_synchronous_is_configurable(monkeypatch: pytest.MonkeyPatch, setting: str, level: int) -> None:
    monkeypatch.setenv("HERMES_KANBAN_SYNCHRONOUS", setting)
    with Board.open() as b:
        # FULL is SQLite's NORMAL plus our own sync after COMMIT (group commit); the others are SQLite's own
        assert (pragma(b, "synchronous"), b.db.group_commit) == ((1, True) if level == 2 else (level, False))
        assert pragma(b, "journal_mode") == "wal"


@pytest.mark.parametrize("setting", ["off", "bogus", "0"])
def test_bad_synchronous_is_refused_and_creates_nothing(
    monkeypatch: pytest.MonkeyPatch, hermes_home: Path, setting: str
) -> None:
    monkeypatch.setenv("HERMES_KANBAN_SYNCHRONOUS", setting)
    with pytest.raises(InvalidValue) as err:
        Board.open()
    assert err.value.message == f"HERMES_KANBAN_SYNCHRONOUS={setting!r} is not one of normal, full, extra"
    assert not (boards_root() / "default").exists()


# -- file modes --------------------------------------------------------------------------------------------------------
def test_board_files_are_0600_and_directories_0700_even_with_a_loose_umask() -> None:
    old = os.umask(0o022)
    try:
        with Board.open() as b:
            b.create_task("x")  # leaves -wal and -shm in place while the connection is open
            wal, shm = b.paths.sidecars
            assert mode(b.paths.db) == 0o600
            assert mode(wal) == 0o600
            assert mode(shm) == 0o600
            assert mode(b.paths.dir) == 0o700
            assert mode(boards_root()) == 0o700
            assert mode(b.paths.dir / ".init.lock") == 0o600
    finally:
        os.umask(old)


def test_a_board_made_by_boards_create_is_private_too() -> None:
    old = os.umask(0o022)
    try:
        with Board.open("research", create=True) as b:
            b.create_task("x")
            assert mode(b.paths.dir) == 0o700
            assert all(mode(p) == 0o600 for p in (b.paths.db, *b.paths.sidecars))
    finally:
        os.umask(old)


def test_a_pinned_db_in_a_shared_directory_leaves_that_directory_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HERMES_KANBAN_DB=/tmp/board.db must not chmod /tmp (or any directory it did not create) to 0700."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    monkeypatch.setenv("HERMES_KANBAN_DB", str(shared / "board.db"))
    with Board.open() as b:
        b.create_task("x")
        assert mode(b.paths.db) == 0o600
    assert mode(shared) == 0o1777


def test_a_pinned_db_in_a_missing_directory_gets_a_private_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_KANBAN_DB", str(tmp_path / "new" / "board.db"))
    with Board.open() as b:
        assert b.slug == "new"
    assert mode(tmp_path / "new") == 0o700


# -- what is not a board is never touched ------------------------------------------------------------------------------
def _sidecars(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name + "-"))


# The wording of corruption errors belongs to store/health.py (fail-closed open, quarantine copies); this suite
# pins the contract: exit 4, the file named, the original bytes untouched and no sidecar created next to it.
def test_a_text_file_posing_as_a_database_is_refused_and_untouched(tmp_path: Path) -> None:
    db = tmp_path / "kanban.db"
    db.write_text("these are my notes, not a database\n" * 20)
    os.chmod(db, 0o644)
    content, st = db.read_bytes(), os.stat(db)
    with pytest.raises(CorruptBoard) as err:
        Board.open(db_path=str(db))
    assert err.value.exit_code == 4
    # never a board: the advice is not doctor/repair/restore (issue 9 item 6), and nothing is written beside it
    assert err.value.message.startswith(f"board database {db} is not a hermes kanban board (not an SQLite database)")
    assert "(see: hermes kanban boards list)" in err.value.message and "restore" not in err.value.message
    assert db.read_bytes() == content
    after = os.stat(db)
    assert (after.st_mtime_ns, after.st_mode, after.st_ino) == (st.st_mtime_ns, st.st_mode, st.st_ino)
    assert _sidecars(db) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kanban.db"]


def test_a_directory_as_the_database_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "kanban.db"
    d.mkdir()
    with pytest.raises(StorageError) as err:
        Board.open(db_path=str(d))
    assert err.value.exit_code == 4
    assert err.value.message == f"board database {d} is a directory, not a file (point HERMES_KANBAN_DB at a .db file)"
    assert list(d.iterdir()) == []


def test_a_symlinked_database_is_refused(tmp_path: Path) -> None:
    with Board.open(db_path=str(tmp_path / "real.db")) as b:
        b.create_task("x")
    link = tmp_path / "link.db"
    link.symlink_to(tmp_path / "real.db")
    with pytest.raises(StorageError) as err:
        Board.open(db_path=str(link))
    assert err.value.message == f"board database {link} is a symlink; refusing to follow it (use the real path)"


def test_a_foreign_sqlite_database_is_refused_and_untouched(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('keep me')")
    conn.close()
    content = db.read_bytes()
    with pytest.raises(StorageError) as err:
        Board.open(db_path=str(db))
    assert err.value.exit_code == 4
    assert err.value.message == (
        f"board database {db} is not a hermes kanban board (an SQLite database without the board's tables); nothing "
        "was written to it or beside it: point HERMES_KANBAN_DB at a board's kanban.db (see: hermes kanban boards "
        "list) or unset it"
    )
    assert db.read_bytes() == content
    assert _sidecars(db) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no open-lock file either (issue 9 item 6)


def test_a_board_from_a_newer_hermes_is_refused_and_unchanged(board: Board) -> None:
    board.create_task("x")
    board.db.execute(f"PRAGMA user_version={LATEST + 1}")
    path = board.paths.db
    board.close()
    before = dump_board(path)
    with pytest.raises(StorageError) as err:
        Board.open(db_path=str(path))
    assert err.value.message == (
        f"board {path} has schema v{LATEST + 1}, newer than this hermes (v{LATEST}); upgrade hermes-kanban"
    )
    assert dump_board(path) == before


def test_an_unknown_named_board_is_not_created() -> None:
    from hermes_cli.kanban import NotFound

    with pytest.raises(NotFound) as err:
        Board.open("research")
    assert err.value.message == "board research does not exist (see: hermes kanban boards create research)"
    assert not (boards_root() / "research").exists()


# -- the write path ----------------------------------------------------------------------------------------------------
class StatementLog:
    """Records every statement a connection executes (APSW's exec trace), to check transaction discipline."""

    def __init__(self, board: Board) -> None:
        self.sql: list[str] = []
        board.db.conn.exec_trace = self._trace

    def _trace(self, cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
        self.sql.append(" ".join(sql.split()))
        return True

    def transactions(self) -> list[list[str]]:
        """Statements grouped by write transaction (BEGIN IMMEDIATE .. COMMIT/ROLLBACK)."""
        out: list[list[str]] = []
        current: list[str] | None = None
        for s in self.sql:
            if s.startswith("BEGIN IMMEDIATE"):
                current = [s]
            elif current is not None:
                current.append(s)
                if s.startswith(("COMMIT", "ROLLBACK")):
                    out.append(current)
                    current = None
        return out


WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _lifecycle(b: Board) -> None:
    """One of every kind of change the board makes."""
    parent, _ = b.create_task("parent", priority=3, tenant="acme")
    child, _ = b.create_task("child", parents=[parent.id])
    other, _ = b.create_task("other", review=True)
    b.comment(parent.id, "hello", author="ana")
    b.link(other.id, child.id)
    b.unlink(other.id, child.id)
    c = b.claim(parent.id, worker="w")
    assert c is not None
    b.heartbeat(parent.id, c.run_id, ttl=60)
    b.complete(parent.id, c.run_id, summary="ok")
    c = b.claim(other.id)
    assert c is not None
    b.request_review(other.id, c.run_id)
    b.request_changes(other.id, reason="more")
    c = b.claim(other.id)
    assert c is not None
    b.finish_run(other.id, c.run_id, "crashed", exit_code=1, retry_after=0)
    c = b.claim(other.id)
    assert c is not None
    b.set_run_process(c.run_id, os.getpid(), None)
    b.block(other.id, c.run_id, reason="stuck")
    b.unblock(other.id)
    b.complete(other.id)
    b.approve(other.id)
    b.archive(child.id)


def test_every_write_runs_inside_begin_immediate(board: Board) -> None:
    log = StatementLog(board)
    _lifecycle(board)
    in_tx = False
    for s in log.sql:
        if s.startswith("BEGIN"):
            in_tx = s.startswith("BEGIN IMMEDIATE")  # a deferred BEGIN is for reads only
        elif s.startswith(("COMMIT", "ROLLBACK")):
            in_tx = False
        elif s.upper().startswith(WRITES):
            assert in_tx, f"write outside BEGIN IMMEDIATE: {s}"


def test_every_change_writes_its_event_in_the_same_transaction(board: Board) -> None:
    log = StatementLog(board)
    _lifecycle(board)
    txs = log.transactions()
    assert len(txs) >= 18
    for tx in txs:
        writes = [s for s in tx if s.startswith(WRITES)]
        assert tx[-1] == "COMMIT"
        if not writes:
            continue
        if all(s.startswith(("UPDATE tasks SET lease_expires_at", "UPDATE runs SET heartbeat_at")) for s in writes):
            continue  # a heartbeat extends a lease; it is not a state change and writes no event (board.py)
        assert any(s.startswith("INSERT INTO events") for s in writes), tx


def test_a_failed_event_write_rolls_back_the_whole_change(board: Board, dump) -> None:
    """The event and the change are one transaction: if the event cannot be written, nothing is."""
    task, _ = board.create_task("x")
    board.db.execute(
        "CREATE TRIGGER refuse_events BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'events refused'); END"
    )
    before = dump(board)
    for change in (
        lambda: board.create_task("y"),
        lambda: board.claim(task.id),
        lambda: board.complete(task.id),
        lambda: board.comment(task.id, "hi"),
        lambda: board.archive(task.id),
    ):
        with pytest.raises(StorageError):
            change()
        assert dump(board) == before
    assert board.get_task(task.id).status == "ready"


def test_busy_writer_retries_then_succeeds(board: Board, lock_holder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction that meets BUSY is retried as a whole; here the other writer lets go after the first try."""
    board.close()
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 1)  # make SQLite give up at once so our retry loop runs
    b = Board.open()
    holder = lock_holder(b.paths.db)
    attempts: list[str] = []

    def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
        if sql.startswith("BEGIN IMMEDIATE"):
            attempts.append(sql)
            if len(attempts) == 2:
                holder.release()  # the first attempt met BUSY; let the second one through
        return True

    b.db.conn.exec_trace = trace
    task, created = b.create_task("after the wait")
    assert created and len(attempts) == 2
    b.db.conn.exec_trace = None
    assert [t.id for t in b.list_tasks()] == [task.id]
    b.close()


def test_busy_past_the_retry_budget_is_board_busy_and_changes_nothing(
    board: Board, lock_holder, monkeypatch: pytest.MonkeyPatch, dump
) -> None:
    board.create_task("existing")
    path = board.paths.db
    board.close()
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 1)
    monkeypatch.setattr(connection, "BUSY_ATTEMPTS", 3)
    b = Board.open()
    before = dump(b)
    lock_holder(path)
    attempts: list[str] = []
    b.db.conn.exec_trace = lambda cursor, sql, bindings: attempts.append(sql) or True
    with pytest.raises(BoardBusy) as err:
        b.create_task("never")
    b.db.conn.exec_trace = None
    assert err.value.exit_code == 4
    assert err.value.message == (
        f"board database {path} stayed locked by other writers (database is locked); retry later"
    )
    assert sum(s.startswith("BEGIN IMMEDIATE") for s in attempts) == 3
    assert not b.db.conn.in_transaction
    b.close()
    assert dump_board(path) == before


def test_domain_errors_roll_back_and_leave_no_transaction_open(board: Board, make_task, dump) -> None:
    from hermes_cli.kanban import InvalidTransition

    task = make_task("done")
    before = dump(board)
    with pytest.raises(InvalidTransition):
        board.claim(task.id)
    assert not board.db.conn.in_transaction
    assert dump(board) == before
    board.create_task("still writable")


def test_reopening_a_board_runs_no_migration_and_writes_nothing(board: Board, dump) -> None:
    board.create_task("x")
    path = board.paths.db
    board.close()
    before = dump_board(path)
    with Board.open() as again:
        assert again.db.value("SELECT count(*) FROM schema_migrations") == LATEST
    assert dump_board(path) == before


def test_event_payloads_carry_iso_timestamps_not_epoch_numbers(board: Board) -> None:
    """Regression: the `claimed` event carried lease_expires_at as epoch seconds; JSON timestamps are ISO 8601 UTC."""
    import re

    _lifecycle(board)
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    for e in board.events():
        for key, value in e.payload.items():
            assert not (isinstance(value, float) and value > 1e9), (e.kind, key, value)
            if key.endswith("_at") and value is not None:
                assert iso.match(value), (e.kind, key, value)


def test_the_doorbell_rings_after_a_commit_and_never_for_a_refused_change(board: Board, make_task) -> None:
    from hermes_cli.kanban.live.doorbell import Doorbell

    done = make_task("done")
    with Doorbell(board.paths.notify_dir, "store-test") as bell:
        assert not bell.wait(0)
        with pytest.raises(HermesError):
            board.claim(done.id)
        assert not bell.wait(0)  # rolled back: nothing to wake anyone for
        task, _ = board.create_task("x")
        assert bell.wait(0)
        claim = board.claim(task.id)
        assert claim is not None and bell.wait(0)
        board.heartbeat(task.id, claim.run_id)
        assert not bell.wait(0)  # a lease extension is not a state change: no event, no ring


def test_an_opener_waits_for_the_exclusive_open_lock_with_no_board_file_open(board: Board) -> None:
    """restore and `boards rm` swap or move files under the exclusive open-lock: a process opening the board
    meanwhile must wait before SQLite opens anything, or it would pair the old db with the new -wal."""
    import os
    import subprocess
    import sys
    import time

    from hermes_cli.kanban.store.connection import exclusive_open_lock

    paths = board.paths
    board.close()
    with exclusive_open_lock(paths):
        opener = subprocess.Popen([sys.executable, "-m", "hermes_cli.main", "kanban", "create", "late"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            fd_dir = f"/proc/{opener.pid}/fd"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until it holds the open-lock file, i.e. it is waiting on it
                try:
                    targets = {os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)}
                except FileNotFoundError:
                    targets = set()
                if any(t.endswith(".open.lock") for t in targets):
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("the opener never reached the open-lock")
            time.sleep(0.2)  # it stays blocked: give it every chance to open something it should not
            targets = {os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)}
            assert not {t for t in targets if t.startswith(str(paths.db))}, targets
            assert opener.poll() is None
        except BaseException:
            opener.kill()
            raise
    out, err = opener.communicate(timeout=60)
    assert (opener.returncode, err) == (0, ""), err
    with Board.open() as b:
        assert [t.title for t in b.list_tasks()] == ["late"]
