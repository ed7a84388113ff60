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
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from ..core.errors import CorruptBoard, HermesError
from ..core.fileio import fsync_file, write_json_atomic
from ..core.locks import file_lock
from ..core.models import iso
from ..core.paths import BoardPaths, ensure_private_dir
from .backup_files import (
    BACKUP_MAX_RESTARTS,
    BACKUP_STEP_PAGES,
    backup_into,
    board_created_at,
    dispatcher_lease,
    finish_backup_copy,
    given_up,
    insert_salvaged_tasks,
    max_ids,
    raise_file_sequences,
    raise_sequences,
    read_backup_summary,
    run_id_high_water,
    salvage_reports,
    salvage_tasks,
    stale_claims,
    verify_file,
)
from .checks import (
    CHECK_LIMIT,
    foreign_key_check,
    index_only_damage,
    int_value,
    integrity_check,
    quick_check,
    reindex,
)
from .connection import fsync_dir, holds_connection, translate

#: the checks and the backup-file functions are reached as store_health.X too (one name for board health)
__all__ = [
    "BACKUP_MAX_RESTARTS",
    "BACKUP_STEP_PAGES",
    "CHECK_LIMIT",
    "backup_into",
    "board_created_at",
    "dispatcher_lease",
    "finish_backup_copy",
    "foreign_key_check",
    "given_up",
    "index_only_damage",
    "insert_salvaged_tasks",
    "int_value",
    "integrity_check",
    "max_ids",
    "quick_check",
    "raise_file_sequences",
    "raise_sequences",
    "read_backup_summary",
    "reindex",
    "run_id_high_water",
    "salvage_reports",
    "salvage_tasks",
    "stale_claims",
    "verify_file",
]

#: most quarantine copies kept per board (content-addressed, never pruned automatically: they are evidence)
QUARANTINE_MAX = 5
#: where the last good quick_check of a db file is remembered, beside it as `.<db name>.quick_check.json`
#: (key = dev, inode, size, mtime_ns, ctime_ns)
CHECK_CACHE = ".quick_check.json"


class CheckFailed(Exception):
    """quick_check/integrity_check found problems (a list of SQLite's messages)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:3]))
        self.problems = problems


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


def translate_error(exc: apsw.Error, paths: BoardPaths) -> HermesError:
    return translate(exc, paths.db)
