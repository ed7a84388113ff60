"""The SQL (and SQLite API calls) of board health: fail-closed checks at open, quarantine copies, integrity checks,
online backups, REINDEX and the few health queries doctor needs.

Rules (DESIGN.md Storage/Health, reference/sqlite-reliability.md):
- Nothing here open()s, reads or copies the live db, -wal or -shm through plain file I/O while this process holds a
  connection to it: closing any fd drops the process's POSIX locks. Copies go through the SQLite backup API. The one
  exception is a byte copy of a file SQLite cannot read at all (not a database), taken only when this process holds
  no connection to that file (`connection.holds_connection`); see `_quarantine_bytes`.
- Locked/busy is never classified as corruption.
- A quarantine copy is content-addressed (sha256 of the copy) and bounded: the same damage is copied once, not once
  per retry, and at most QUARANTINE_MAX copies are ever kept per board.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from ..core.errors import CorruptBoard, HermesError
from ..core.fileio import fsync_file, write_json_atomic
from ..core.locks import file_lock
from ..core.paths import BoardPaths
from .connection import Database, fsync_dir, holds_connection, translate

#: most quarantine copies kept per board (content-addressed, never pruned automatically: they are evidence)
QUARANTINE_MAX = 5
#: where the last good quick_check of a db file is remembered, beside it as `.<db name>.quick_check.json`
#: (key = dev, inode, size, mtime_ns, ctime_ns)
CHECK_CACHE = ".quick_check.json"
#: how many problems a check reports at most
CHECK_LIMIT = 100

_INDEX_MSG = re.compile(
    r"^(?:row \d+ missing from index (?P<a>\S+)|wrong # of entries in index (?P<b>\S+)"
    r"|non-unique entry in UNIQUE index (?P<c>\S+))$"
)
_TREE_MSG = re.compile(r"^Tree (?P<root>\d+) page \d+")


class CheckFailed(Exception):
    """quick_check/integrity_check found problems (a list of SQLite's messages)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:3]))
        self.problems = problems


def int_value(conn: apsw.Connection, sql: str) -> int:
    """First column of the first row as an int, for queries SQLite answers with an integer (PRAGMA page_size,
    page_count, user_version; count(*); coalesce(max(id), 0)). A NULL raises TypeError, as int(None) would."""
    value = conn.execute(sql).fetchall()[0][0]
    if value is None:
        raise TypeError(f"{sql!r} returned NULL where SQLite always returns an integer")
    return int(value)


# -- checks ----------------------------------------------------------------------------------------------------------
def _check(conn: apsw.Connection, pragma: str, limit: int) -> list[str]:
    """Run quick_check/integrity_check. Returns the problems ([] when ok). CorruptError/NotADBError raised by the
    check itself (SQLite gives up on some damage) become the one problem; busy/locked propagate (not corruption)."""
    try:
        rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}({int(limit)})")]
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        return [f"{pragma}: {exc}"]
    problems: list[str] = []
    for r in rows:
        for line in r.splitlines():
            line = line.strip()
            if line and line != "ok" and not line.startswith("*** in database"):
                problems.append(line)
    return problems


def quick_check(conn: apsw.Connection, limit: int = CHECK_LIMIT) -> list[str]:
    return _check(conn, "quick_check", limit)


def integrity_check(conn: apsw.Connection, limit: int = CHECK_LIMIT) -> list[str]:
    return _check(conn, "integrity_check", limit)


def foreign_key_check(conn: apsw.Connection) -> list[str]:
    try:
        rows = conn.execute("PRAGMA foreign_key_check").fetchall()
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        return [f"foreign_key_check: {exc}"]
    return [f"{table} row {rowid} refers to a missing {parent} row" for table, rowid, parent, _fk in rows]


def index_only_damage(conn: apsw.Connection, problems: list[str]) -> set[str] | None:
    """The damaged index names if every problem is confined to (non-automatic) indexes, else None.

    Index damage shows up as "row N missing from index X", "wrong # of entries in index X", "non-unique entry in
    UNIQUE index X", or as page errors of a tree whose root page belongs to an index.
    """
    if not problems:
        return set()
    try:
        rows = conn.execute("SELECT name, rootpage FROM sqlite_schema WHERE type = 'index'").fetchall()
    except apsw.Error:
        return None
    by_root = {int(root): str(name) for name, root in rows if root}
    names = {str(name) for name, _ in rows}
    found: set[str] = set()
    for p in problems:
        m = _INDEX_MSG.match(p)
        if m:
            name = m.group("a") or m.group("b") or m.group("c")
            if name not in names:
                return None
            found.add(name)
            continue
        t = _TREE_MSG.match(p)
        if t and int(t.group("root")) in by_root:
            found.add(by_root[int(t.group("root"))])
            continue
        return None
    return found


def reindex(db: Database, names: set[str]) -> None:
    """Rebuild the named indexes (all of them when `names` is empty) in one write transaction."""

    def tx() -> None:
        if not names:
            db.execute("REINDEX")
        for name in sorted(names):
            db.execute(f'REINDEX "{name.replace(chr(34), chr(34) * 2)}"')

    db.write(tx)


# -- fail-closed open ------------------------------------------------------------------------------------------------
def db_key(path: Path) -> list[int] | None:
    """Identity of the file's current content as far as stat can tell (ctime cannot be set back by a user)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def check_cache_path(paths: BoardPaths) -> Path:
    return paths.dir / f".{paths.db.name}{CHECK_CACHE}"


def cached_ok(paths: BoardPaths, key: list[int]) -> bool:
    try:
        with open(check_cache_path(paths), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("key") == key and data.get("db") == str(paths.db)


def remember_ok(paths: BoardPaths, key: list[int]) -> None:
    """Best effort: a lost cache entry only costs one more quick_check on the next open (so no fsync either)."""
    try:
        write_json_atomic(check_cache_path(paths), {"db": str(paths.db), "key": key, "checked_at": time.time()},
                          durable=False)
    except OSError:
        return  # e.g. a read-only board directory: the next open checks again, which is all the cache saves


def quick_check_cached(conn: apsw.Connection, paths: BoardPaths, *, trust_cache: bool = True) -> list[str]:
    """quick_check, skipped when this exact file state already passed one (`trust_cache`), remembered when it
    passes. Returns the problems ([] when ok). The file's key is taken before the check, so a write during the check
    leaves a stale key and the next call checks again. Busy/locked propagate (never corruption)."""
    key = db_key(paths.db)
    if trust_cache and key is not None and cached_ok(paths, key):
        return []
    problems = quick_check(conn)
    if not problems and key is not None:
        remember_ok(paths, key)
    return problems


def forget_check(paths: BoardPaths) -> None:
    """Drop the remembered good check (after restore/repair the file changed anyway; this makes it explicit)."""
    try:
        os.unlink(check_cache_path(paths))
    except FileNotFoundError:
        pass  # nothing remembered


def check_not_empty(paths: BoardPaths) -> None:
    """A 0-byte board file is a truncated (or never initialised) board: refuse it before SQLite sees it.

    SQLite would treat it as a fresh empty database (and delete a -wal beside it), and the migrations would then
    create a schema over it. The init lock is taken before deciding, so a board being created right now (its file is
    briefly 0 bytes) is not mistaken for a truncated one.
    """
    try:
        if os.stat(paths.db).st_size > 0:
            return
    except FileNotFoundError:
        return
    with file_lock(paths.dir / ".init.lock"):
        if os.stat(paths.db).st_size > 0:
            return
    wal = paths.sidecars[0]
    extra = ""
    if wal.exists() and wal.stat().st_size > 0:
        q = _quarantine_bytes(paths, "empty database file with a non-empty -wal")
        extra = f"; its -wal ({wal.stat().st_size} bytes) was copied to {q}" if q else ""
    raise CorruptBoard(
        f"board database {paths.db} is empty (0 bytes): it was truncated or never initialised; nothing was created "
        f"over it{extra} (see: hermes kanban doctor, then hermes kanban restore --latest)"
    )


def verify_on_open(conn: apsw.Connection, paths: BoardPaths) -> None:
    """quick_check the board once per file state (persisted across processes), or always when the header looks
    wrong (size not a whole number of pages). Raises CorruptBoard (after a quarantine copy) when it fails."""
    key = db_key(paths.db)
    page_size = int_value(conn, "PRAGMA page_size")
    suspicious = key is None or page_size <= 0 or key[2] % page_size != 0
    try:
        problems = quick_check_cached(conn, paths, trust_cache=not suspicious)
    except (apsw.BusyError, apsw.LockedError):
        return  # another process is recovering or checkpointing the WAL: busy is never corruption; check next time
    if problems:
        raise fail_closed(paths, CheckFailed(problems), conn)


def no_checkpoint_on_close(conn: apsw.Connection) -> None:
    """Closing `conn` must not checkpoint (and so neither write the db nor delete the -wal/-shm): set on every
    connection to a board that failed its check, before it is closed."""
    conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)


def _probe_uri(path: Path, params: str) -> str:
    return "file:" + urllib.parse.quote(str(path)) + "?" + params


@dataclass(slots=True)
class Probe:
    """A read-only look at a board that cannot write, create or delete any of its files."""

    conn: apsw.Connection
    #: problems found ([] when the board passed its check)
    problems: list[str]
    #: the header could not be read at all (not a database, or page 1 corrupt): refused even to doctor
    error: apsw.Error | None = None


def probe(paths: BoardPaths, *, check: bool = True, vfs: str | None = None) -> Probe | None:
    """Check the board through a connection that cannot change any of its files, before a read-write connection
    (which rebuilds the -shm as the first opener, and checkpoints the -wal into the db as the last closer) is ever
    opened on it. Returns None when this way of looking cannot answer (the caller then checks the usual way).

    - With a -wal: `mode=ro&readonly_shm=1`. SQLite reads the -shm read-only, or, when no connection holds the board,
      reads the -wal into private memory (the "unreliable shm" path of read-only WAL readers): nothing is written.
    - Without a -wal (no connection is open, the db is the whole board): `immutable=1`, which takes no locks and
      creates no -wal; a change of the file's identity during the check means somebody opened and wrote it meanwhile,
      and the answer is discarded.
    Busy, locked or unopenable: None (busy is never corruption).
    """
    wal = paths.sidecars[0]
    has_wal = wal.exists()
    key = db_key(paths.db)
    params = "mode=ro&readonly_shm=1" if has_wal else "mode=ro&immutable=1"
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI | apsw.SQLITE_OPEN_NOFOLLOW
    try:
        conn = apsw.Connection(_probe_uri(paths.db, params), flags=flags, vfs=vfs)
    except apsw.Error:
        return None
    keep = False
    try:
        no_checkpoint_on_close(conn)
        conn.setbusytimeout(2000)
        try:
            conn.execute("PRAGMA schema_version").fetchall()
        except (apsw.NotADBError, apsw.CorruptError) as exc:
            keep = True
            return Probe(conn, [str(exc)], error=exc)
        problems: list[str] = []
        if check:
            page_size = int_value(conn, "PRAGMA page_size")
            suspicious = key is None or page_size <= 0 or key[2] % page_size != 0
            problems = quick_check_cached(conn, paths, trust_cache=not suspicious)
        if not has_wal and (wal.exists() or db_key(paths.db) != key):
            return None  # somebody opened and wrote the board while we read it without locks
        keep = True
        return Probe(conn, problems)
    except apsw.Error:
        return None  # busy, locked, no -shm beside a -wal (CANTOPEN), an I/O error: the usual way answers
    finally:
        if not keep:
            conn.close()


def fail_closed(paths: BoardPaths, exc: BaseException, conn: apsw.Connection | None) -> CorruptBoard:
    """Quarantine a copy (once per content) and build the exit-4 error. Closes `conn` without a checkpoint, so the
    refused board's db, -wal and -shm are left as they were."""
    if isinstance(exc, CheckFailed):
        what = f"corrupt (quick_check: {'; '.join(exc.problems[:2])})"
    elif isinstance(exc, apsw.NotADBError):
        what = "not a database"
    else:
        what = f"corrupt ({exc})"
    qpath: Path | None = None
    try:
        if conn is not None and not isinstance(exc, apsw.NotADBError):
            qpath = quarantine_via_backup(conn, paths, what)
    finally:
        if conn is not None:
            no_checkpoint_on_close(conn)
            conn.close()
    if qpath is None:
        qpath = _quarantine_bytes(paths, what)
    kept = f"; a copy is in {qpath}" if qpath else ""
    return CorruptBoard(
        f"board database {paths.db} is {what}{kept}; nothing was changed "
        "(see: hermes kanban doctor, then hermes kanban repair or hermes kanban restore --latest)"
    )


# -- quarantine ------------------------------------------------------------------------------------------------------
def quarantine_dir(paths: BoardPaths) -> Path:
    return paths.dir / "quarantine"


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    path: Path
    reason: str
    taken_at: float
    method: str

    def as_dict(self) -> dict[str, Any]:
        from ..core.models import iso

        return {"path": str(self.path), "reason": self.reason, "taken_at": iso(self.taken_at), "method": self.method}


def _quarantine_metas(paths: BoardPaths) -> Iterator[dict[str, Any]]:
    """The metadata files of the board's quarantine copies; half-written or foreign files are not ours: skipped."""
    qdir = quarantine_dir(paths)
    try:
        names = sorted(os.listdir(qdir))
    except OSError:
        return
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(qdir / name, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict):
            yield meta


def list_quarantine(paths: BoardPaths) -> list[QuarantineEntry]:
    out: list[QuarantineEntry] = []
    qdir = quarantine_dir(paths)
    for meta in _quarantine_metas(paths):
        try:
            out.append(QuarantineEntry(qdir / meta["file"], str(meta["reason"]), float(meta["taken_at"]),
                                       str(meta["method"])))
        except (KeyError, TypeError, ValueError):
            continue  # not one of ours
    return sorted(out, key=lambda e: e.taken_at)


def _known(paths: BoardPaths, key: list[int] | None) -> Path | None:
    """The quarantine copy already taken of this exact file state, if any."""
    if key is None:
        return None
    for meta in _quarantine_metas(paths):
        if meta.get("key") == key:
            return quarantine_dir(paths) / str(meta.get("file"))
    return None


def _prepare_quarantine(paths: BoardPaths) -> Path | None:
    from ..core.paths import ensure_private_dir

    qdir = quarantine_dir(paths)
    try:
        ensure_private_dir(qdir)
    except (OSError, HermesError):
        return None
    if len(list_quarantine(paths)) >= QUARANTINE_MAX:
        return None
    return qdir


def _sha256_file(path: Path) -> str:
    import hashlib  # here, not at the top: every board open imports this module, few quarantine

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _settle(paths: BoardPaths, tmp: Path, suffix: str, reason: str, method: str, key: list[int] | None,
            extra: dict[Path, str] | None = None) -> Path:
    """Name the copy by its content, keep one file per content, write its metadata, fsync."""
    qdir = tmp.parent
    digest = _sha256_file(tmp)[:16]
    final = qdir / f"{digest}{suffix}"
    if final.exists():
        os.unlink(tmp)
    else:
        fsync_file(tmp)
        os.rename(tmp, final)
    for src_tmp, ext in (extra or {}).items():
        target = qdir / f"{digest}{suffix}{ext}"
        if target.exists():
            os.unlink(src_tmp)
        else:
            fsync_file(src_tmp)
            os.rename(src_tmp, target)
    meta = {"file": final.name, "source": str(paths.db), "reason": reason, "taken_at": time.time(),
            "method": method, "key": key}
    write_json_atomic(qdir / f"{digest}.json", meta)
    fsync_dir(qdir)
    return final


def quarantine_via_backup(conn: apsw.Connection, paths: BoardPaths, reason: str) -> Path | None:
    """Copy the damaged board through the SQLite backup API (pages verbatim, WAL content included)."""
    key = db_key(paths.db)
    known = _known(paths, key)
    if known is not None:
        return known
    qdir = _prepare_quarantine(paths)
    if qdir is None:
        return None
    tmp = qdir / f".tmp-{os.getpid()}-{os.urandom(4).hex()}.db"
    try:
        backup_into(conn, tmp)
    except (apsw.Error, OSError):
        for p in (tmp, Path(f"{tmp}-journal")):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass  # never created
        return None
    try:
        return _settle(paths, tmp, ".db", reason, "backup-api", key)
    except OSError:
        return None


def _quarantine_bytes(paths: BoardPaths, reason: str) -> Path | None:
    """Byte copy of a board SQLite cannot read (not a database, empty with a -wal, page 1 unreadable).

    Plain file I/O on a board file is only safe in a process that holds no connection to it: closing our fd would
    otherwise drop every POSIX lock this process holds on the file (howtocorrupt.html 2.2). Callers have closed
    their own connection; if any other Database in this process still holds one, no copy is taken.
    """
    if holds_connection(paths.db):
        return None
    key = db_key(paths.db)
    known = _known(paths, key)
    if known is not None:
        return known
    qdir = _prepare_quarantine(paths)
    if qdir is None:
        return None
    token = f"{os.getpid()}-{os.urandom(4).hex()}"
    tmp = qdir / f".tmp-{token}.db"
    extra: dict[Path, str] = {}
    try:
        _copy_bytes(paths.db, tmp)
        wal = paths.sidecars[0]
        if wal.exists():
            wal_tmp = qdir / f".tmp-{token}.db-wal"
            _copy_bytes(wal, wal_tmp)
            extra[wal_tmp] = "-wal"
        return _settle(paths, tmp, ".db", reason, "byte-copy", key, extra)
    except OSError:
        for p in (tmp, *extra):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass  # never created
        return None


def _copy_bytes(src: Path, dst: Path) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while chunk := os.read(fin, 1 << 20):
                os.write(fout, chunk)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


# -- backups through the SQLite backup API ---------------------------------------------------------------------------
#: pages copied per backup step when reporting progress
BACKUP_STEP_PAGES = 4096
#: a stepped backup restarts when another connection writes; after this many restarts finish in one step
BACKUP_MAX_RESTARTS = 3


def backup_into(src: apsw.Connection, dest: Path, progress: Callable[[int, int], None] | None = None) -> int:
    """Copy the database behind `src` into a new file `dest` (0600). Returns the page count.

    Without `progress`: one step (backup.html: a stepped backup restarts whenever another connection writes). With
    `progress`: steps of BACKUP_STEP_PAGES reporting (done, total); after BACKUP_MAX_RESTARTS restarts it finishes in
    one step so a busy board cannot starve it.
    """
    old_umask = os.umask(0o077)
    try:
        out = apsw.Connection(str(dest), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
                              | apsw.SQLITE_OPEN_NOFOLLOW)
    finally:
        os.umask(old_umask)
    try:
        with out.backup("main", src, "main") as b:
            if progress is None:
                b.step(-1)
            else:
                restarts, last_remaining = 0, None
                while not b.done:
                    step = -1 if restarts >= BACKUP_MAX_RESTARTS else BACKUP_STEP_PAGES
                    b.step(step)
                    total, remaining = b.page_count, b.remaining
                    if last_remaining is not None and remaining > last_remaining:
                        restarts += 1
                    last_remaining = remaining
                    progress(total - remaining, total)
        return int_value(out, "PRAGMA page_count")
    finally:
        out.close()


def finish_backup_copy(path: Path, *, journal_mode: str) -> list[str]:
    """integrity_check a fresh copy and set its journal mode (DELETE for a self-contained backup file, WAL for a
    board about to go live, switched under synchronous=EXTRA). Returns the problems ([] when ok)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_NOFOLLOW)
    try:
        conn.setbusytimeout(5000)
        problems = integrity_check(conn)
        if not problems:
            problems = foreign_key_check(conn)
        if not problems:
            conn.execute("PRAGMA synchronous=EXTRA")
            mode = conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchall()[0][0]
            if str(mode).lower() != journal_mode.lower():
                problems = [f"could not switch the copy to journal_mode={journal_mode} (got {mode})"]
        return problems
    finally:
        conn.close()


def read_backup_summary(path: Path) -> dict[str, Any]:
    """Schema version, task count and last event id of a backup file (opened read-only; DELETE-mode files only)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_NOFOLLOW)
    try:
        conn.setbusytimeout(5000)
        return {
            "schema_version": int_value(conn, "PRAGMA user_version"),
            "tasks": int_value(conn, "SELECT count(*) FROM tasks"),
            "last_event_id": int_value(conn, "SELECT coalesce(max(id), 0) FROM events"),
        }
    finally:
        conn.close()


def verify_file(path: Path) -> list[str]:
    """integrity_check of a backup file, opened read-only (a DELETE-mode backup needs no sidecars)."""
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_NOFOLLOW)
    except apsw.Error as exc:
        return [f"cannot open: {exc}"]
    try:
        conn.setbusytimeout(5000)
        return integrity_check(conn)
    except apsw.Error as exc:
        return [f"{exc.__class__.__name__}: {exc}"]
    finally:
        conn.close()


# -- board-level health queries ----------------------------------------------------------------------------------------
def dispatcher_lease(db: Database) -> dict[str, Any] | None:
    return db.row("SELECT host, pid, pid_create_time, epoch, acquired_at, refreshed_at FROM dispatcher_lease "
                  "WHERE id = 1")


def stale_claims(db: Database, now: float) -> list[dict[str, Any]]:
    """Running tasks whose lease has expired (the dispatcher reclaims them; without one they stay stuck)."""
    return db.rows(
        "SELECT id, current_run_id AS run_id, lease_expires_at FROM tasks WHERE status = 'running' "
        "AND lease_expires_at < ? ORDER BY lease_expires_at",
        (now,),
    )


def given_up(db: Database) -> list[dict[str, Any]]:
    """Blocked tasks whose block is a give-up (retries exhausted: the newest `blocked`/`gave_up` event of the task is
    `gave_up`), oldest give-up first, with the attempts and the last run's outcome that event recorded."""
    return db.rows(
        "SELECT t.id, t.title, json_extract(e.payload, '$.attempts') AS attempts, "
        "json_extract(e.payload, '$.last_outcome') AS last_outcome FROM tasks t "
        "JOIN events e ON e.id = (SELECT max(id) FROM events WHERE task_id = t.id AND kind IN ('blocked', 'gave_up')) "
        "WHERE t.status = 'blocked' AND e.kind = 'gave_up' ORDER BY e.id"
    )


def board_created_at(db: Database) -> float | None:
    """When the board's schema was first created (the first migration), None on a board without that record."""
    value = db.value("SELECT min(applied_at) FROM schema_migrations")
    return None if value is None else float(value)


def run_id_high_water(db: Database) -> int:
    """The highest run id this board has handed out: the runs AUTOINCREMENT sequence (which restore raises past every
    run id the old board or the spool used), or the highest run row, whichever is larger."""
    return int(db.value(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0), "
        "coalesce((SELECT max(id) FROM runs), 0))"
    ))


def max_ids(db: Database) -> dict[str, int]:
    """Highest run and event ids (for keeping fencing tokens and event cursors monotonic across a restore)."""
    return {
        "runs": int(db.value("SELECT coalesce(max(id), 0) FROM runs")),
        "events": int(db.value("SELECT coalesce(max(id), 0) FROM events")),
    }


def raise_sequences(db: Database, minimum: dict[str, int]) -> None:
    """Make the next run/event ids larger than `minimum[...]`: a restored board never reuses a run id (fencing
    token) or an event id (reader cursor) handed out before the restore."""

    def tx() -> None:
        for table, floor in minimum.items():
            if table not in ("runs", "events") or floor <= 0:
                continue
            cur = db.value("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
            if cur is None:
                db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (table, floor))
            elif int(cur) < floor:
                db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (floor, table))

    db.write(tx)


#: highest id a table has used: its AUTOINCREMENT sequence (which a restore may have raised past every row) or its
#: highest row, whichever is larger. `{t}` is runs or events.
_HIGH_WATER_SQL = ("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = '{t}'), 0), "
                   "coalesce((SELECT max(id) FROM {t}), 0))")


def raise_file_sequences(path: Path, floor_for: Callable[[dict[str, int]], dict[str, int]]) -> dict[str, int]:
    """Raise the run/event id sequences of a board file that is not live yet (restore's staged copy).

    `floor_for` gets the file's own high-water marks and returns the floor to install. The write commits under
    synchronous=EXTRA and the WAL is folded back into the file before it closes, so the floor is in the file itself
    the moment it is renamed into place: no opener can ever see the file without it. Returns the floor installed.
    """
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_NOFOLLOW)
    try:
        conn.setbusytimeout(5000)
        conn.execute("PRAGMA synchronous=EXTRA")
        own = {t: int_value(conn, _HIGH_WATER_SQL.format(t=t)) for t in ("runs", "events")}
        floor = floor_for(own)
        with conn:  # one transaction
            for table, value in floor.items():
                if table not in ("runs", "events") or value <= 0:
                    continue
                conn.execute("INSERT INTO sqlite_sequence(name, seq) SELECT ?, 0 WHERE NOT EXISTS "
                             "(SELECT 1 FROM sqlite_sequence WHERE name = ?)", (table, table))
                conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ? AND seq < ?", (value, table, value))
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
        if busy:
            raise apsw.BusyError(f"could not fold the WAL of {path} back into it")
        return floor
    finally:
        conn.close()


def salvage_reports(
    conn: apsw.Connection, after_event_id: int
) -> tuple[list[dict[str, Any]], dict[str, int | None], str]:
    """Read completions/blocks logged after `after_event_id` from a (possibly damaged) board, best effort.

    Returns (reports, max ids (None where unreadable), note). Reading stops at the first corrupt page.
    """
    reports: list[dict[str, Any]] = []
    ids: dict[str, int | None] = {"runs": None, "events": None}
    note = "ok"
    try:
        for eid, task_id, run_id, kind, payload in conn.execute(
            "SELECT id, task_id, run_id, kind, payload FROM events WHERE id > ? AND kind IN "
            "('completed', 'blocked', 'review_requested') AND task_id IS NOT NULL ORDER BY id",
            (after_event_id,),
        ):
            try:
                data = json.loads(payload)
            except ValueError:
                data = {}
            if data.get("approved"):
                continue  # an approval is a person's act, not a worker report
            reports.append({"event_id": eid, "task_id": task_id, "run_id": run_id,
                            "kind": "block" if kind == "blocked" else "complete",
                            "summary": data.get("reason") if kind == "blocked" else data.get("summary"),
                            "forced": bool(data.get("forced"))})
    except apsw.Error as exc:
        note = f"stopped early: {exc}"
    for table in ("runs", "events"):
        try:
            ids[table] = int_value(conn, _HIGH_WATER_SQL.format(t=table))
        except apsw.Error as exc:
            note = f"{note}; max({table}.id) unreadable: {exc}"
    return reports, ids, note


def salvage_tasks(conn: apsw.Connection) -> tuple[list[dict[str, Any]], list[tuple[str, str, float]], str]:
    """Every task row and link of a (possibly damaged) board, best effort: (tasks, links, note)."""
    from .tasks import TASK_COLUMNS

    tasks: list[dict[str, Any]] = []
    links: list[tuple[str, str, float]] = []
    note = "ok"
    names = [c.strip() for c in TASK_COLUMNS.split(",")]
    try:
        for row in conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks"):
            tasks.append(dict(zip(names, row, strict=True)))
    except apsw.Error as exc:
        note = f"tasks: stopped early: {exc}"
    try:
        links = [(str(a), str(b), float(c)) for a, b, c in conn.execute(
            "SELECT parent_id, child_id, created_at FROM links")]
    except apsw.Error as exc:
        note = f"{note}; links: {exc}"
    return tasks, links, note


def insert_salvaged_tasks(db: Database, tasks: list[dict[str, Any]], links: list[tuple[str, str, float]],
                          now: float) -> list[str]:
    """Put back tasks a restored backup does not have (created after it), as the old board last had them, minus
    their runs: a running task comes back ready, with no run (its worker's report, spooled or salvaged, then
    applies as a late report). Links are restored where both ends exist. Returns the ids inserted."""
    from .tasks import add_event, insert_task

    def tx() -> list[str]:
        added = []
        for t in tasks:
            if db.value("SELECT 1 FROM tasks WHERE id = ?", (t["id"],)) is not None:
                continue
            row = dict(t)
            if row["status"] == "running":
                row["status"] = "ready"
            row.update(current_run_id=None, lease_expires_at=None, updated_at=now)
            if row.get("idempotency_key") and db.value(
                    "SELECT 1 FROM tasks WHERE idempotency_key = ? AND status != 'archived'",
                    (row["idempotency_key"],)):
                row["idempotency_key"] = None  # the restored board already has a task with that key
            insert_task(db, row)
            add_event(db, "salvaged", now, row["id"], None, status=row["status"], title=row["title"])
            added.append(row["id"])
        for parent, child, created in links:
            if child in added or parent in added:
                if db.value("SELECT count(*) FROM tasks WHERE id IN (?, ?)", (parent, child)) == 2:
                    db.execute("INSERT OR IGNORE INTO links(parent_id, child_id, created_at) VALUES (?, ?, ?)",
                               (parent, child, created))
        return added

    return db.write(tx)


def translate_error(exc: apsw.Error, paths: BoardPaths) -> HermesError:
    return translate(exc, paths.db)
