"""`boards migrate SLUG --to URL|sqlite`: move a board between engines with all its history.

Both ways the copy is one write transaction of the target, read from one snapshot of the source, checked row count
by row count, with the target's run and event id sequences at or above the source's high-water marks (no fencing
token or event id is ever handed out twice). The source is left as it was when anything fails.

SQLite -> PostgreSQL: refused while any process has the board file open; the target schema must be new or empty.
After the copy, with the board's open-lock held exclusively (nobody can open the file), the file is checked not to
have changed since the copy, `postgres.url` is written and the SQLite files are moved to `<board dir>/moved/<time>/`.

PostgreSQL -> SQLite: refused while any hermes connection to the board is open (any host); the schema is renamed
out of the way first (`hkmoved_...`: no host can write the board there any more), copied into a new SQLite file,
which is checked (integrity_check) and renamed into place, and `postgres.url` is moved aside. The old schema is kept
(its name is in the result) until someone drops it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import Conflict, InvalidValue, NotFound, StorageError
from ..core.paths import BoardPaths, ensure_private_dir
from ..store import engine
from ..store.connection import exclusive_open_lock, fsync_dir
from .backup import backup_stamp, holders

#: a move shows progress on stderr once it has run this long
PROGRESS_AFTER_S = 2.0


@dataclass
class MoveResult:
    slug: str
    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)
    high_water: dict[str, int] = field(default_factory=dict)
    moved_aside: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"slug": self.slug, "from": self.source, "to": self.target, "rows": self.rows,
                "high_water": self.high_water, "moved_aside": self.moved_aside, "seconds": round(self.seconds, 3)}


def progress_printer(enabled: bool) -> Any:
    """Progress of a long move on stderr (a line per table, and every 20,000 rows), or None."""
    if not enabled:
        return None
    last: dict[str, int] = {}
    started = time.monotonic()

    def show(table: str, done: int, total: int) -> None:
        if time.monotonic() - started < PROGRESS_AFTER_S:
            return  # a short move says nothing until it is done
        if done == total or done - last.get(table, 0) >= 20_000:
            last[table] = done
            print(f"moving {table}: {done}/{total}", file=sys.stderr, flush=True)

    return show


def migrate(paths: BoardPaths, to: str, *, progress: Any = None) -> MoveResult:
    started = time.monotonic()
    current = engine.board_url(paths)
    if os.environ.get(engine.URL_ENV):
        raise InvalidValue("HERMES_KANBAN_URL puts every board of this host in PostgreSQL; unset it to move boards "
                           "between engines (and use boards create --url for the others)")
    if to == "sqlite":
        if current is None:
            raise InvalidValue(f"board {paths.slug} is already a SQLite board ({paths.db})")
        result = _to_sqlite(paths, current, progress)
    else:
        url = engine.check_url(to)
        if current is not None:
            raise InvalidValue(f"board {paths.slug} is already in PostgreSQL ({engine.redact_url(current)}); move it "
                               f"to SQLite first (boards migrate {paths.slug} --to sqlite)")
        result = _to_postgres(paths, url, progress)
    result.seconds = time.monotonic() - started
    return result


def _refuse_holders(paths: BoardPaths) -> None:
    busy = holders(paths)
    if busy:
        who = ", ".join(f"pid {h['pid']} ({h['name']})" for h in busy[:5])
        raise Conflict(f"board {paths.slug} is open in {len(busy)} process(es): {who}; stop them (dispatcher, TUI, "
                       "workers) and retry the move")


def _to_postgres(paths: BoardPaths, url: str, progress: Any) -> MoveResult:
    from ..store.opening import connect
    from ..store.pg.opening import connect as pg_connect
    from ..store.pg.transfer import copy_board, drop_new_schema, verify_copy
    from ..store.schema import migrate as sqlite_migrate

    if not paths.db.exists():
        raise NotFound(f"board {paths.slug} does not exist (see: hermes kanban boards list)")
    _refuse_holders(paths)
    src = connect(paths, create=False)
    try:
        sqlite_migrate(src)
        dst = pg_connect(paths, url, create=True)
        created = dst.created
        try:
            copied = copy_board(src, dst, progress)
            verify_copy(src, dst, copied)
        except BaseException:
            if created:
                drop_new_schema(dst)
            raise
        dst.close()
    finally:
        src.close()
    result = MoveResult(paths.slug, str(paths.db), engine.redact_url(url), copied["rows"], copied["high_water"])
    aside = paths.dir / "moved" / backup_stamp(time.time())
    moved: list[Path] = []
    try:
        with exclusive_open_lock(paths):
            late = holders(paths)
            if late:
                raise Conflict(f"board {paths.slug} was opened by pid {late[0]['pid']} during the move; stop it and "
                               "retry")
            # Nothing may have been written since the copy (every change writes an event, a claim a run, ...):
            # read with no hermes connection open, none can open while the lock is held.
            if _sqlite_marks(paths) != (copied["high_water"], copied["rows"].get("tasks", 0)):
                raise Conflict(f"board {paths.slug} changed during the move; stop every writer and retry")
            engine.save_board_url(paths, url)
            ensure_private_dir(aside.parent)
            ensure_private_dir(aside)
            for p in (*paths.sidecars, paths.db):  # sidecars first, the db last
                if p.exists():
                    os.rename(p, aside / p.name)
                    moved.append(p)
            fsync_dir(aside)
            fsync_dir(paths.dir)
            result.moved_aside = str(aside)
    except BaseException:
        # Not switched: the SQLite files go back (if any moved), the URL file goes, the new schema is dropped.
        for p in moved:
            os.rename(aside / p.name, p)
        _forget_url(paths)
        if created:
            from ..store.pg.database import PgDatabase

            drop_new_schema(PgDatabase(url, paths))
        raise
    return result


def _forget_url(paths: BoardPaths) -> None:
    try:
        os.unlink(paths.dir / engine.URL_FILE)
    except FileNotFoundError:
        pass  # never written: the board was not switched


def _sqlite_marks(paths: BoardPaths) -> tuple[dict[str, int], int]:
    from ..store.pg.transfer import file_marks

    return file_marks(paths.db)


def _to_sqlite(paths: BoardPaths, url: str, progress: Any) -> MoveResult:
    from ..store.backup_files import finish_backup_copy
    from ..store.pg.database import PgDatabase
    from ..store.pg.transfer import export_to_sqlite, restore_schema, retire_schema

    if paths.db.exists():
        raise Conflict(f"board {paths.slug} has a SQLite file already ({paths.db}); move it aside first")
    ensure_private_dir(paths.dir)
    probe = PgDatabase(url, paths)  # reachable, and the board exists there
    try:
        from ..store.pg.opening import schema_exists

        if not schema_exists(probe):
            raise NotFound(f"board {paths.slug} does not exist at {engine.redact_url(url)}")
    finally:
        probe.close()
    retired = retire_schema(paths, url)
    staging = paths.dir / f".migrate-{os.getpid()}.db"
    try:
        src = PgDatabase(url, paths, schema=retired)
        try:
            copied = export_to_sqlite(src, staging, progress)
        finally:
            src.close()
        problems = finish_backup_copy(staging, journal_mode="wal")
        if problems:
            raise StorageError(f"the SQLite copy of board {paths.slug} failed integrity_check ({problems[0]}); "
                               "nothing was switched")
        os.rename(staging, paths.db)
        fsync_dir(paths.dir)
        aside = paths.dir / "moved"
        ensure_private_dir(aside)
        os.rename(paths.dir / engine.URL_FILE, aside / f"{engine.URL_FILE}-{backup_stamp(time.time())}")
        fsync_dir(paths.dir)
    except BaseException:
        for p in (staging, Path(f"{staging}-wal"), Path(f"{staging}-shm")):
            if p.exists():
                os.unlink(p)
        if (paths.dir / engine.URL_FILE).exists():  # not switched (else the SQLite file is the board now)
            if paths.db.exists():
                os.unlink(paths.db)  # renamed into place, but the switch did not finish: the source stays the board
            restore_schema(paths, url, retired)
        raise
    return MoveResult(paths.slug, engine.redact_url(url), str(paths.db), copied["rows"], copied["high_water"],
                      moved_aside=f"PostgreSQL schema {retired} (drop it when no longer needed)")


def restore_postgres(paths: BoardPaths, url: str, src: Path, result: Any, replay: bool) -> Any:
    """`restore` of a PostgreSQL board from a backup file (a SQLite board file, whichever engine it came from): the
    board's rows are replaced by the backup's in one transaction, its run/comment/event sequences end above both the
    backup's and the board's own high-water marks and every spooled run id (a fencing token is never handed out
    twice), then the spool is replayed. Refused while any hermes connection to the board is open (any host)."""
    import shutil
    import tempfile

    from ..domain.board import Board
    from ..store.opening import connect
    from ..store.pg.opening import connect as pg_connect
    from ..store.pg.transfer import copy_board, other_connections, verify_copy
    from ..store.schema import migrate as sqlite_migrate
    from . import reconcile, spool

    others = other_connections(paths, url)
    if others:
        raise Conflict(f"board {paths.slug} is open in {len(others)} other connection(s) (backend pid {others[0][0]}, "
                       f"from {others[0][1]}): stop its dispatchers, workers and TUIs on every host and retry the "
                       "restore")
    # The backup is read from a private copy: opening a board file may write beside it (its open-lock, a migration)
    work = Path(tempfile.mkdtemp(prefix=".restore-", dir=paths.dir if paths.dir.is_dir() else None))
    try:
        staged = work / "kanban.db"
        shutil.copyfile(src, staged)
        backup_db = connect(BoardPaths(paths.slug, work, staged), create=False)
        try:
            sqlite_migrate(backup_db)
            dst = pg_connect(paths, url, create=False)
            try:
                spooled = [r.run_id or 0 for r in spool.pending(paths)[0]]
                copied = copy_board(backup_db, dst, replace=True, id_floor={"runs": max(spooled, default=0)})
                verify_copy(backup_db, dst, copied)
            finally:
                dst.close()
        finally:
            backup_db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.id_floor = copied["high_water"]
    with Board.open(paths.slug, create=False) as board:
        if replay:
            result.replay = reconcile.apply(board, backup=False).as_dict()
    return result
