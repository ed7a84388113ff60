"""Restore of one board from a backup (DESIGN.md Health); taking backups is durability/backup.py.

restore: only when no process has the board open (every process's open files are scanned with psutil, then the
board's SQLite locks are try-locked and held while the files are swapped). The backup is staged beside the board
and switched to WAL under synchronous=EXTRA. Then, while the open-lock is held exclusively (nobody can open the
board):
- the old db + -wal + -shm are moved together into `pre-restore/<stamp>/` (kept as evidence),
- completions and blocks the old board logged after the backup was taken are salvaged (best effort, from a byte copy
  of the moved-aside files) into the spool,
- the staged file's run and event id sequences are raised past every id the old board or the spool has seen, so a
  fencing token or a reader's cursor from before the restore is never handed out again, not even to the first
  opener after the swap,
- the staged file is renamed into place (on any failure before that, the old files are put back).
After that the tasks only the old board had are put back and the spool is replayed (`reconcile.apply`).
"""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from ..core.errors import Conflict, CorruptBoard, HermesError, InvalidValue, NotFound
from ..core.fileio import fsync_file
from ..core.locks import LockHeld, file_lock
from ..core.paths import BoardPaths, ensure_private_dir
from ..domain.board import Board
from ..store import engine
from ..store import health as store_health
from ..store.connection import exclusive_open_lock, fsync_dir
from ..store.schema import LATEST
from . import reconcile, spool
from .backup import backup_stamp, holders, unlink_quietly

#: unix VFS lock bytes (sqlite3.c os_unix.c): a connection holds a shared lock on the db's SHARED range while it
#: reads, and every WAL connection holds a shared lock on the -shm "DMS" byte for as long as it is open.
_PENDING_BYTE = 0x40000000
_SHARED_FIRST, _SHARED_SIZE = _PENDING_BYTE + 2, 510
_SHM_DMS = 128
#: ids skipped past the backup's when the old board cannot be read at all (nobody knows its highest run id)
UNKNOWN_ID_GAP = 1_000_000


class _BoardLocks:
    """Try-lock the board's SQLite lock bytes and hold them while the files are swapped.

    This process holds no connection to the board (restore never opens it), so opening and closing these fds
    cannot drop anybody's locks. A process psutil could not see (another PID namespace, no permission) still holds
    its SQLite locks, and the try-lock fails. New openers meet our locks and get SQLITE_BUSY meanwhile.
    """

    def __init__(self, paths: BoardPaths) -> None:
        self.fds: list[int] = []
        wal, shm = paths.sidecars
        try:
            for path, start, length in ((paths.db, _SHARED_FIRST, _SHARED_SIZE), (shm, _SHM_DMS, 1)):
                try:
                    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                self.fds.append(fd)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        raise Conflict(
                            f"another process holds a SQLite lock on {path}; stop every process using board "
                            f"{paths.slug} (dispatcher, TUI, workers) and retry"
                        ) from None
                    raise
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


@dataclass(slots=True)
class RestoreResult:
    restored_from: Path
    board: Path | str  #: the board file, or a PostgreSQL board's URL (without its password)
    moved_aside: Path | None
    salvaged: int = 0
    salvage_note: str = ""
    id_floor: dict[str, int] = field(default_factory=dict)
    replay: dict[str, Any] | None = None
    integrity_check: str = "ok"
    #: tasks the backup does not have, put back from the old board (ids)
    recreated: list[str] = field(default_factory=list)
    salvaged_tasks: list[dict[str, Any]] = field(default_factory=list)
    salvaged_links: list[tuple[str, str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "restored_from": str(self.restored_from), "board": str(self.board),
            "moved_aside": None if self.moved_aside is None else str(self.moved_aside), "salvaged": self.salvaged,
            "salvage_note": self.salvage_note, "recreated_tasks": self.recreated, "id_floor": self.id_floor,
            "replay": self.replay,
            "integrity_check": self.integrity_check,
        }


def restore(paths: BoardPaths, source: str | os.PathLike[str], *, replay: bool = True) -> RestoreResult:
    """Replace the board with a backup (see the module docstring). Refuses while any process holds the board."""
    src = Path(source).expanduser().absolute()
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        raise NotFound(f"backup {src} does not exist (see: hermes kanban backups list)") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidValue(f"backup {src} is not a regular file (symlinks are refused)")
    if src.resolve() in {paths.db.resolve(), *(p.resolve() for p in paths.sidecars)}:
        raise InvalidValue(f"{src} is the board itself, not a backup (see: hermes kanban backups list)")
    problems = store_health.verify_file(src)
    if problems:
        raise CorruptBoard(f"backup {src} failed integrity_check ({problems[0]}); pick another "
                           "(see: hermes kanban backups list)")
    try:
        summary = store_health.read_backup_summary(src)
    except apsw.Error as exc:
        raise InvalidValue(f"{src} is not a hermes board backup ({exc})") from None
    if summary["schema_version"] < 1 or summary["schema_version"] > LATEST:
        raise InvalidValue(f"{src} has schema v{summary['schema_version']}; this hermes reads v1..v{LATEST}")
    url = engine.board_url(paths)
    if url is not None:
        from .migrate import restore_postgres

        result = RestoreResult(restored_from=src, board=engine.redact_url(url), moved_aside=None)
        return restore_postgres(paths, url, src, result, replay)
    ensure_private_dir(paths.dir)
    try:
        with file_lock(paths.dir / ".restore.lock", wait=False):
            return _restore_locked(paths, src, summary, replay)
    except LockHeld:
        raise Conflict(f"another restore of board {paths.slug} is running; wait for it") from None


def _restore_locked(paths: BoardPaths, src: Path, summary: dict[str, Any], replay: bool) -> RestoreResult:
    busy = holders(paths)
    if busy:
        who = ", ".join(f"pid {h['pid']} ({h['name']})" for h in busy[:5])
        raise Conflict(
            f"board {paths.slug} is open in {len(busy)} process(es): {who}; stop them (dispatcher, TUI, workers) "
            "and retry the restore"
        )
    stamp = backup_stamp(time.time())
    staging = paths.dir / f".restore-{stamp}-{secrets.token_hex(4)}.db"
    try:
        src_conn = apsw.Connection(str(src), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_NOFOLLOW)
        try:
            store_health.backup_into(src_conn, staging)
        finally:
            src_conn.close()
        problems = store_health.finish_backup_copy(staging, journal_mode="wal")
        if problems:
            raise CorruptBoard(f"the staged copy of {src} failed integrity_check ({problems[0]}); board untouched")
        fsync_file(staging)
    except BaseException:
        unlink_quietly(staging, *(Path(f"{staging}{s}") for s in ("-wal", "-shm", "-journal")))
        raise
    aside: Path | None = None
    result = RestoreResult(restored_from=src, board=paths.db, moved_aside=None)
    try:
        # Every hermes connection holds the board's open-lock shared for its whole life: holding it exclusively
        # across the swap means no connection is open now and none can open until the files are swapped (a scan
        # of open files alone leaves a window in which a new opener pairs the old db with the new -wal).
        with exclusive_open_lock(paths):
            late = holders(paths)
            if late:
                raise Conflict(f"board {paths.slug} was opened by pid {late[0]['pid']} during the restore; stop it "
                               "and retry")
            locks = _BoardLocks(paths)
            try:
                present = [p for p in (*paths.sidecars, paths.db) if p.exists()]  # sidecars first, db last
                if present:
                    ensure_private_dir(paths.dir / "pre-restore")
                    aside = paths.dir / "pre-restore" / stamp
                    ensure_private_dir(aside)
                    for p in present:
                        os.rename(p, aside / p.name)
                    fsync_dir(aside)
                result.moved_aside = aside
                try:
                    # The id floor goes into the staged file before it is renamed into place, while nobody can open
                    # the board: the first opener after the swap (a dispatcher waiting on the open-lock) already
                    # gets run ids the old board never handed out. Raising it after the swap left a window in which
                    # an old worker's token named a newcomer's run.
                    old_ids = _salvage(paths, aside, summary["last_event_id"], result)
                    spooled_runs = [r.run_id or 0 for r in spool.pending(paths)[0]]
                    result.id_floor = store_health.raise_file_sequences(
                        staging, lambda own: _id_floor(own, old_ids, spooled_runs))
                    fsync_file(staging)
                except BaseException:
                    _put_back(paths, aside, present)
                    raise
                os.rename(staging, paths.db)
                fsync_dir(paths.dir)
            finally:
                locks.release()
    except BaseException:
        unlink_quietly(staging, *(Path(f"{staging}{s}") for s in ("-wal", "-shm", "-journal")))
        raise
    store_health.forget_check(paths)
    with Board.open(paths.slug, str(paths.db), create=False) as board:
        if result.salvaged_tasks:
            result.recreated = store_health.insert_salvaged_tasks(board.db, result.salvaged_tasks,
                                                                  result.salvaged_links, time.time())
        if replay:
            # No backup before this replay: the board was just restored from a verified backup.
            result.replay = reconcile.apply(board, backup=False).as_dict()
        problems = store_health.integrity_check(board.db.conn)
        result.integrity_check = "ok" if not problems else "; ".join(problems[:3])
    if problems:
        raise CorruptBoard(f"restored board {paths.db} failed integrity_check ({problems[0]}) (see: hermes kanban "
                           "doctor --full)")
    return result


def _id_floor(own: dict[str, int], old_ids: dict[str, int | None], spooled_runs: list[int]) -> dict[str, int]:
    """The run/event id floor of a restored board: past every id the backup, the old board and the spool have seen.
    An old board we could not read: nobody knows its highest id, so skip far past the backup's."""
    floor = {}
    for k, mine in own.items():
        old = old_ids.get(k)
        floor[k] = mine + UNKNOWN_ID_GAP if old is None else max(mine, old)
    floor["runs"] = max([floor["runs"], *spooled_runs])
    return floor


def _put_back(paths: BoardPaths, aside: Path | None, moved: list[Path]) -> None:
    """Undo the move aside (restore failed before the swap): the old board goes back exactly as it was."""
    if aside is None:
        return
    for p in reversed(moved):  # db first, then its sidecars
        os.rename(aside / p.name, p)
    fsync_dir(paths.dir)


def _salvage(
    paths: BoardPaths, aside: Path | None, after_event_id: int, result: RestoreResult
) -> dict[str, int | None]:
    """Spool the completions/blocks the old board logged after the backup. Returns its highest run/event ids, None
    for those that could not be read."""
    if aside is None or not (aside / paths.db.name).exists():
        result.salvage_note = "no old board"
        return {"runs": 0, "events": 0}
    # The moved-aside files are no longer live (no process held them, and they are not at the board's path), so a
    # byte copy is safe; reading the copy keeps the evidence in pre-restore/ untouched (opening it would checkpoint).
    tmpdir = Path(tempfile.mkdtemp(prefix=".salvage-", dir=paths.dir))
    try:
        for name in (paths.db.name, paths.db.name + "-wal"):
            if (aside / name).exists():
                shutil.copyfile(aside / name, tmpdir / name, follow_symlinks=False)
        try:
            conn = apsw.Connection(str(tmpdir / paths.db.name), flags=apsw.SQLITE_OPEN_READWRITE
                                   | apsw.SQLITE_OPEN_NOFOLLOW)
        except apsw.Error as exc:
            result.salvage_note = f"old board unreadable: {exc}"
            return {"runs": None, "events": None}
        try:
            conn.setbusytimeout(2000)
            try:
                reports, ids, note = store_health.salvage_reports(conn, after_event_id)
                tasks, links, task_note = store_health.salvage_tasks(conn)
            except apsw.Error as exc:
                result.salvage_note = f"old board unreadable: {exc}"
                return {"runs": None, "events": None}
            if task_note != "ok":
                note = f"{note}; {task_note}" if note != "ok" else task_note
            result.salvaged_tasks = tasks
            result.salvaged_links = links
        finally:
            conn.close()
        n = 0
        for r in reports:
            try:
                # The board's own spool: its db is moved aside right now, which spool_dir_for would take for a
                # board that is gone.
                _, wrote = spool.spool_report(paths, r["kind"], r["task_id"], r["run_id"], summary=r["summary"],
                                              force=r["forced"], source="salvaged", directory=paths.spool_dir)
            except HermesError:
                continue  # a different report for that run is already spooled: the spooled one wins
            n += int(wrote)
        result.salvaged = n
        result.salvage_note = note
        return ids
    finally:
        # Our own temp copy; a leftover (e.g. a full disk) is harmless and named .salvage-* for the operator.
        shutil.rmtree(tmpdir, ignore_errors=True)
