"""Backups of one board (DESIGN.md Health); restoring one is durability/restore.py.

backup: SQLite backup API into a temp file -> integrity_check + foreign_key_check of the copy -> the copy switched to
journal_mode=DELETE (one self-contained file, no sidecars) -> fsync -> link into place -> fsync the directory. The
newest N automatic backups are kept. A live board is only ever read through SQLite, never copied as bytes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from ..core.errors import CorruptBoard, InvalidValue, NotFound, StorageError
from ..core.fileio import fsync_file, write_json_atomic
from ..core.models import iso
from ..core.paths import BoardPaths, ensure_private_dir
from ..store import engine
from ..store import health as store_health
from ..store.connection import fsync_dir

if TYPE_CHECKING:
    from ..domain.board import Board

#: automatic backups kept per board (override: --keep, or HERMES_KANBAN_BACKUP_KEEP)
DEFAULT_KEEP = 10
BACKUP_RE = re.compile(r"^kanban-\d{8}T\d{6}\.\d{3}Z(?:-\d+)?\.db$")


def default_keep() -> int:
    raw = os.environ.get("HERMES_KANBAN_BACKUP_KEEP")
    if not raw:
        return DEFAULT_KEEP
    try:
        n = int(raw)
    except ValueError:
        raise InvalidValue(f"HERMES_KANBAN_BACKUP_KEEP={raw!r} is not a whole number") from None
    if n < 1:
        raise InvalidValue(f"HERMES_KANBAN_BACKUP_KEEP={raw!r} must be at least 1")
    return n


@dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    size: int
    created_at: float
    verified: bool
    reason: str | None = None
    pages: int | None = None
    tasks: int | None = None
    last_event_id: int | None = None
    seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "size": self.size, "created_at": iso(self.created_at), "verified": self.verified,
            "reason": self.reason, "pages": self.pages, "tasks": self.tasks, "last_event_id": self.last_event_id,
            "seconds": self.seconds,
        }


def backup_stamp(ts: float) -> str:
    d = datetime.fromtimestamp(ts, UTC)
    return d.strftime("%Y%m%dT%H%M%S") + f".{int(d.microsecond / 1000):03d}Z"


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _link_new(tmp: Path, target: Path, *, numbered: bool) -> Path:
    """Link `tmp` to `target`, never replacing a file. An automatic backup whose name is taken (two backups started
    in the same millisecond) takes the next free `-N` name: link() itself is the test, so two racing backups can
    never pick the same name. An --output that exists is refused."""
    n = 0
    while True:
        candidate = target if n == 0 else target.with_name(f"{target.stem}-{n}{target.suffix}")
        try:
            os.link(tmp, candidate)
            return candidate
        except FileExistsError:
            if not numbered:
                raise InvalidValue(f"--output {target} already exists; choose a new file name") from None
            n += 1


def unlink_quietly(*paths: Path) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass  # never created, or already gone


def create(
    board: Board,
    *,
    output: str | os.PathLike[str] | None = None,
    keep: int | None = None,
    reason: str = "manual",
    progress: Callable[[int, int], None] | None = None,
) -> BackupInfo:
    """Take a verified backup of an open board. Automatic backups (no `output`) rotate, keeping the newest `keep`."""
    paths = board.paths
    keep = default_keep() if keep is None else keep
    if keep < 1:
        raise InvalidValue(f"--keep {keep}: keep at least 1 backup")
    started = time.time()
    if output is None:
        ensure_private_dir(paths.backups_dir)
        target = paths.backups_dir / f"kanban-{backup_stamp(started)}.db"
    else:
        target = Path(output).expanduser().absolute()
        if target.exists() or target.is_symlink():
            raise InvalidValue(f"--output {target} already exists; choose a new file name")
        if not target.parent.is_dir():
            raise InvalidValue(f"--output {target}: directory {target.parent} does not exist")
        if target.resolve() in {paths.db.resolve(), *(p.resolve() for p in paths.sidecars)}:
            raise InvalidValue(f"--output {target} is the board itself; choose another file")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    sidecars = [Path(f"{tmp}{s}") for s in ("-journal", "-wal", "-shm")]
    try:
        try:
            if engine.is_postgres(board.db):
                # An export into a new SQLite board file, read from one snapshot of the server: the same file a
                # SQLite board's backup is, so `restore`, `doctor` and `backups list` read it alike.
                from ..store.pg.transfer import export_to_sqlite

                export_to_sqlite(board.db, tmp, None if progress is None else lambda _t, d, n: progress(d, n))
                pages = None
            else:
                pages = store_health.backup_into(board.db.conn, tmp, progress)
            problems = store_health.finish_backup_copy(tmp, journal_mode="delete")
        except apsw.Error as exc:
            raise store_health.translate_error(exc, paths) from exc
        if problems:
            raise CorruptBoard(
                f"the backup copy of {engine.describe(paths)['db']} failed integrity_check ({problems[0]}); the board "
                "itself is damaged, "
                "no backup was kept (see: hermes kanban doctor --full)"
            )
        fsync_file(tmp)
        target = _link_new(tmp, target, numbered=output is None)
        fsync_dir(target.parent)
    except OSError as exc:
        raise StorageError(f"cannot write backup {target} ({exc.strerror or exc}); free space and retry") from exc
    finally:
        unlink_quietly(tmp, *sidecars)
    fsync_dir(target.parent)
    summary = store_health.read_backup_summary(target)
    info = BackupInfo(
        path=target, size=target.stat().st_size, created_at=started, verified=True, reason=reason, pages=pages,
        tasks=summary["tasks"], last_event_id=summary["last_event_id"], seconds=round(time.time() - started, 3),
    )
    source = engine.describe(paths)["db"]
    write_json_atomic(_meta_path(target), {**info.as_dict(), "created_at_ts": started, "source": source,
                                     "schema_version": summary["schema_version"], "integrity_check": "ok"})
    if output is None:
        prune(paths, keep)
    return info


def _info(path: Path) -> BackupInfo:
    """A backup and its metadata. A missing, damaged or foreign `.json` beside it is treated as no metadata: the
    backup then counts as unverified and dated by its file time (never an error: one bad file must not stop
    `backups list`, doctor or the dispatcher's automatic backups)."""
    meta: dict[str, Any] = {}
    try:
        with open(_meta_path(path), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    st = path.stat()
    created = meta.get("created_at_ts")
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not created > 0:
        created = st.st_mtime
    return BackupInfo(
        path=path, size=st.st_size, created_at=float(created),
        verified=meta.get("integrity_check") == "ok", reason=meta.get("reason"), pages=meta.get("pages"),
        tasks=meta.get("tasks"), last_event_id=meta.get("last_event_id"), seconds=meta.get("seconds"),
    )


def list_backups(paths: BoardPaths) -> list[BackupInfo]:
    """The board's automatic backups, newest first."""
    try:
        names = os.listdir(paths.backups_dir)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        p = paths.backups_dir / name
        try:
            if BACKUP_RE.match(name) and stat.S_ISREG(p.lstat().st_mode):
                found.append(_info(p))
        except FileNotFoundError:
            continue  # pruned meanwhile by another backup (a dispatcher's, a reconcile's): not a backup any more
    return sorted(found, key=lambda b: (b.created_at, b.path.name), reverse=True)


def latest(paths: BoardPaths) -> BackupInfo:
    for b in list_backups(paths):
        if b.verified:
            return b
    raise NotFound(f"board {paths.slug} has no verified backup in {paths.backups_dir} (see: hermes kanban backup)")


def prune(paths: BoardPaths, keep: int) -> list[Path]:
    removed = []
    for b in list_backups(paths)[keep:]:
        unlink_quietly(b.path, _meta_path(b.path))
        removed.append(b.path)
    if removed:
        fsync_dir(paths.backups_dir)
    return removed


# -- who has the board open (restore and boards rm refuse while anyone does) --------------------------------------
def holders(paths: BoardPaths) -> list[dict[str, Any]]:
    """Processes (any user, as far as we may look) with the db, -wal or -shm open."""
    import psutil

    targets = {os.path.realpath(p) for p in (paths.db, *paths.sidecars)}
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            files = proc.open_files()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone, or not ours to inspect (the try-lock below still catches it)
        hits = sorted({f.path for f in files if f.path in targets})
        if hits:
            found.append({"pid": proc.info["pid"], "name": proc.info["name"], "files": hits})
    return found
