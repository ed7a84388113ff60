"""Group commit (store/wal_sync.py): at synchronous=FULL a write lets the board's write lock go at COMMIT and syncs
the WAL after it, and returns (and rings the doorbell) only once that sync is done.

That an acknowledged write survives a power cut is tests/torture/test_powercut.py's FULL row: its disk model makes
only what SQLite's VFS was asked to sync durable, so a write that returned before its sync loses commits there
(seen: 5 of 5 sample cuts lost 1-3 acknowledged commits with the sync after COMMIT removed).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.errors import StorageError
from hermes_cli.kanban.store import engine, wal_sync
from hermes_cli.kanban.store.write_queue import WriteQueue

pytestmark = pytest.mark.sqlite_only  # the WAL is SQLite's

WAIT = 60  # seconds: only a hang reaches it


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every WAL sync (by the real wal_sync.sync) and every writer-queue release, in the order they happen."""
    seen: list[str] = []
    real_sync, real_leave = wal_sync.sync, WriteQueue.leave

    def sync(conn):
        real_sync(conn)
        seen.append("sync")

    def leave(self):
        real_leave(self)
        seen.append("leave")

    monkeypatch.setattr(wal_sync, "sync", sync)
    monkeypatch.setattr(WriteQueue, "leave", leave)
    return seen


def test_a_write_at_full_lets_the_queue_go_then_syncs_then_returns(tmp_path: Path, syncs: list[str]) -> None:
    with Board.open(db_path=str(tmp_path / "k.db")) as b:
        assert b.db.group_commit
        rang: list[list[str]] = []
        b.db.on_event_commit(lambda: rang.append(list(syncs)))
        syncs.clear()
        b.create_task("one")
        assert syncs == ["leave", "sync"]
        assert rang == [["leave", "sync"]]  # the doorbell rang after the sync, not before


@pytest.mark.parametrize("mode", ["normal", "extra"])
def test_other_modes_are_sqlites_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncs: list[str],
                                     mode: str) -> None:
    monkeypatch.setenv("HERMES_KANBAN_SYNCHRONOUS", mode)
    with Board.open(db_path=str(tmp_path / "k.db")) as b:
        syncs.clear()
        b.create_task("one")
        assert not b.db.group_commit and syncs == ["leave"]


def test_another_writer_commits_while_a_write_waits_for_its_sync(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of it: a writer's fsync no longer holds the board. A's write is stopped inside its sync; B (another
    connection) writes and returns meanwhile, and a third connection sees both commits; A returns once its sync
    goes on."""
    db = str(tmp_path / "k.db")
    real_sync = wal_sync.sync
    in_sync, go_on = threading.Event(), threading.Event()

    def slow_sync(conn):
        if threading.current_thread() is a_thread:
            in_sync.set()
            assert go_on.wait(WAIT)
        real_sync(conn)

    real_wait = WriteQueue._wait
    queued: list[str] = []

    def wait(self, stop):
        queued.append(threading.current_thread().name)
        real_wait(self, stop)

    with Board.open(db_path=db) as a, Board.open(db_path=db) as b, Board.open(db_path=db) as reader:
        monkeypatch.setattr(wal_sync, "sync", slow_sync)
        monkeypatch.setattr(WriteQueue, "_wait", wait)
        a_thread = threading.Thread(target=lambda: a.create_task("from A"))
        done: list[str] = []
        a_thread.start()
        try:
            assert in_sync.wait(WAIT)
            b.create_task("from B")  # does not wait for A's sync: not even in the writers' queue
            assert queued == []
            done.append("B")
            assert sorted(t.title for t in reader.list_tasks()) == ["from A", "from B"]
            assert a_thread.is_alive()  # A has not returned: its sync is not done
        finally:
            go_on.set()
            a_thread.join(WAIT)
        assert not a_thread.is_alive() and done == ["B"]


def test_wait_durable_syncs_what_a_reader_saw(tmp_path: Path, syncs: list[str]) -> None:
    """A reader that hands board data to another system (the hub's outbox) syncs first: what it read may be another
    writer's commit that is not yet durable."""
    with Board.open(db_path=str(tmp_path / "k.db")) as b:
        b.create_task("one")
        syncs.clear()
        engine.wait_durable(b.db)
        assert syncs == ["sync"]


def test_wait_durable_syncs_for_a_reader_that_never_wrote(tmp_path: Path, syncs: list[str]) -> None:
    """The hub's outbox may read through a connection that never writes: what it read is other writers' commits."""
    db = str(tmp_path / "k.db")
    with Board.open(db_path=db) as writer, Board.open(db_path=db) as reader:
        writer.create_task("one")
        assert [t.title for t in reader.list_tasks()] == ["one"]
        syncs.clear()
        engine.wait_durable(reader.db)
        assert syncs == ["sync"]


@pytest.mark.parametrize("mode", ["normal", "extra"])
def test_wait_durable_has_nothing_to_do_off_group_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          syncs: list[str], mode: str) -> None:
    monkeypatch.setenv("HERMES_KANBAN_SYNCHRONOUS", mode)  # NORMAL promises no more; EXTRA syncs inside COMMIT
    with Board.open(db_path=str(tmp_path / "k.db")) as b:
        b.create_task("one")
        syncs.clear()
        engine.wait_durable(b.db)
        assert syncs == []


def test_a_failed_sync_is_a_storage_error_saying_the_write_was_committed(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import apsw

    def failing(conn):
        raise apsw.IOError("disk I/O error")

    with Board.open(db_path=str(tmp_path / "k.db")) as b:
        monkeypatch.setattr(wal_sync, "sync", failing)
        with pytest.raises(StorageError) as err:
            b.create_task("one")
        assert "was committed but syncing it to disk failed (disk I/O error)" in err.value.message
        monkeypatch.undo()
        assert [t.title for t in b.list_tasks()] == ["one"]


def test_sync_reaches_sqlites_own_wal_file(tmp_path: Path) -> None:
    """wal_sync finds the WAL through SQLite's file control and its xSync succeeds; a connection that has not read
    yet has no WAL open, and sync says so instead of pretending."""
    import apsw

    db = str(tmp_path / "k.db")
    with Board.open(db_path=db) as b:
        b.create_task("one")
        assert wal_sync.can_sync(b.db.conn)
        wal_sync.sync(b.db.conn)
        fresh = apsw.Connection(db)
        try:
            assert not wal_sync.can_sync(fresh)
            with pytest.raises(apsw.IOError, match="the WAL is not open"):
                wal_sync.sync(fresh)
        finally:
            fresh.close()
