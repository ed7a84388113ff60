"""The completion spool: where a worker's report goes when the board cannot take it (DESIGN.md "Never lose a
completion").

One JSON file per task+run in `<board dir>/spool/`, written durably (temp file, fsync, link into place, fsync the
directory), 0600, never through a symlink. It lives beside the database, not in it, so it works when the database is
corrupt, read-only, locked past its retries or cannot be opened at all. `reconcile.py` applies it; applied files move
to `spool/applied/`, reports that can never apply (the task is already done) to `spool/skipped/`.

The first report spooled for a task+run wins, like on the board itself (a run's first report closes it): repeating it
is a no-op, a different report for the same run is refused as a conflict.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Conflict, HermesError, InvalidValue, StorageError
from .models import iso
from .paths import BoardPaths, ensure_private_dir
from .store.connection import fsync_dir
from .values import check_task_id

if TYPE_CHECKING:
    from .board import Board

SPOOL_FORMAT = 1
KINDS = ("complete", "block")
#: subdirectories of the spool for reports that were applied, or that can never apply
APPLIED, SKIPPED = "applied", "skipped"
#: largest spool file read back (a report is a few hundred bytes; this only bounds a hostile file)
MAX_FILE = 4 << 20


@dataclass(frozen=True, slots=True)
class SpooledReport:
    """One report waiting in the spool."""

    path: Path
    kind: str  #: complete | block
    task_id: str
    run_id: int | None
    summary: str | None
    force: bool
    spooled_at: float
    source: str  #: "spooled" (a command could not commit) or "salvaged" (read back from a damaged board by restore)
    error: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path), "kind": self.kind, "task_id": self.task_id, "run_id": self.run_id,
            "summary": self.summary, "force": self.force, "spooled_at": iso(self.spooled_at), "source": self.source,
            "error": self.error,
        }

    def same_report(self, other: SpooledReport) -> bool:
        return (self.kind, self.task_id, self.run_id, self.summary, self.force) == (
            other.kind, other.task_id, other.run_id, other.summary, other.force)


def file_name(task_id: str, run_id: int | None) -> str:
    return f"{task_id}.{'manual' if run_id is None else int(run_id)}.json"


def spool_report(
    paths: BoardPaths,
    kind: str,
    task_id: str,
    run_id: int | None,
    *,
    summary: str | None = None,
    force: bool = False,
    error: HermesError | None = None,
    source: str = "spooled",
) -> tuple[SpooledReport, bool]:
    """Write one report durably. Returns (the report on disk, whether this call wrote it).

    Raises Conflict when a different report for the same task+run is already spooled, StorageError when the spool
    itself cannot be written (then nothing is durable and the caller must fail).
    """
    if kind not in KINDS:
        raise InvalidValue(f"cannot spool a {kind!r} report: only {', '.join(KINDS)}")
    check_task_id(task_id)
    if run_id is not None and (not isinstance(run_id, int) or run_id <= 0):
        raise InvalidValue(f"invalid run id {run_id!r}: run ids are positive integers")
    now = time.time()
    report = SpooledReport(
        path=paths.spool_dir / file_name(task_id, run_id), kind=kind, task_id=task_id, run_id=run_id,
        summary=summary, force=bool(force), spooled_at=now, source=source,
        error=None if error is None else {"code": error.code, "message": error.message},
    )
    data = {
        "format": SPOOL_FORMAT, "kind": kind, "task_id": task_id, "run_id": run_id, "summary": summary,
        "force": bool(force), "spooled_at": now, "source": source, "error": report.error, "board": paths.slug,
        "db": str(paths.db), "host": socket.gethostname(), "pid": os.getpid(),
    }
    try:
        ensure_private_dir(paths.spool_dir)
        tmp = paths.spool_dir / f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(data, separators=(",", ":")).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() never replaces an existing file: the first report for a task+run stays.
            os.link(tmp, report.path)
            wrote = True
        except FileExistsError:
            wrote = False
        finally:
            os.unlink(tmp)
        fsync_dir(paths.spool_dir)
    except OSError as exc:
        raise StorageError(
            f"cannot write the spool {paths.spool_dir} ({exc.strerror or exc}); the {kind} report for {task_id} "
            "was NOT saved: retry the command once the disk is writable"
        ) from exc
    if wrote:
        return report, True
    existing = read_report(report.path)
    if isinstance(existing, str):
        raise StorageError(f"spool file {report.path} exists but is unreadable ({existing}); move it aside and retry")
    if not existing.same_report(report):
        raise Conflict(
            f"a different {existing.kind} report for task {task_id} run {run_id} is already spooled in "
            f"{existing.path}; nothing changed (see: hermes kanban reconcile-completions)"
        )
    return existing, False


def read_report(path: Path) -> SpooledReport | str:
    """Parse one spool file; a string says why it is not a valid report."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open ({exc.strerror or exc})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size > MAX_FILE:
            return f"too large ({st.st_size} bytes)"
        raw = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    try:
        d = json.loads(raw)
        kind, task_id, run_id = d["kind"], d["task_id"], d.get("run_id")
        if kind not in KINDS:
            return f"unknown kind {kind!r}"
        check_task_id(task_id)
        if run_id is not None and (not isinstance(run_id, int) or isinstance(run_id, bool) or run_id <= 0):
            return f"invalid run id {run_id!r}"
        return SpooledReport(
            path=path, kind=kind, task_id=task_id, run_id=run_id, summary=d.get("summary"),
            force=bool(d.get("force")), spooled_at=float(d.get("spooled_at") or 0.0),
            source=str(d.get("source") or "spooled"), error=d.get("error"),
        )
    except (ValueError, KeyError, TypeError, InvalidValue) as exc:
        return f"not a spool report ({exc.__class__.__name__}: {exc})"


def _entries(paths: BoardPaths) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(paths.spool_dir) as it:
            return sorted((e for e in it if e.name.endswith(".json") and not e.name.startswith(".")),
                          key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def backlog(paths: BoardPaths) -> int:
    """How many reports wait in the spool (cheap: one directory scan)."""
    return len(_entries(paths))


def pending(paths: BoardPaths) -> tuple[list[SpooledReport], list[dict[str, str]]]:
    """The reports waiting in the spool (oldest first) and the files that are not valid reports."""
    reports: list[SpooledReport] = []
    bad: list[dict[str, str]] = []
    for e in _entries(paths):
        r = read_report(Path(e.path))
        if isinstance(r, str) and not os.path.lexists(e.path):
            continue  # filed away by a concurrent reconcile since the scan
        if isinstance(r, str):
            bad.append({"file": e.path, "problem": r})
        else:
            reports.append(r)
    reports.sort(key=lambda r: (r.spooled_at, r.path.name))
    return reports, bad


def archive(paths: BoardPaths, report: SpooledReport, where: str = APPLIED) -> Path | None:
    """Move a handled report out of the pending spool (never overwriting an older archived file). Returns None when
    the file is already gone: another reconcile (the dispatcher's drain, a person's --apply) filed it first."""
    target_dir = paths.spool_dir / where
    ensure_private_dir(target_dir)
    target = target_dir / report.path.name
    n = 1
    while target.exists():
        target = target_dir / f"{report.path.stem}.{n}.json"
        n += 1
    try:
        os.rename(report.path, target)
    except FileNotFoundError:
        return None
    fsync_dir(target_dir)
    fsync_dir(paths.spool_dir)
    return target


def drain_if_healthy(board: Board) -> int:
    """Apply the spool when there is one and the board is healthy. Returns how many reports were applied.

    For the dispatcher's per-tick maintenance: a directory scan when the spool is empty; otherwise a quick health
    check, then `reconcile.apply` (verified backup, quick_check before and after, one transaction). A board that is
    not healthy, or a storage error while applying, leaves the spool as it is (doctor reports the backlog).
    """
    if backlog(board.paths) == 0:
        return 0
    from . import health, reconcile
    from .store.tasks import last_event_id

    try:
        # Reports that could not apply last time (conflict, review gate, unknown task) are not re-read every tick:
        # only when the spool or the board changed since.
        state = (os.stat(board.paths.spool_dir).st_mtime_ns, last_event_id(board.db))
        if _NOTHING_TO_DRAIN.get(str(board.paths.db)) == state:
            return 0
        if not health.quick_health(board).ok:
            return 0
        applied = reconcile.apply(board).applied
    except (StorageError, OSError):
        # The board went unhealthy between the check and the apply: the reports stay spooled, nothing is lost.
        return 0
    if applied == 0:
        _NOTHING_TO_DRAIN[str(board.paths.db)] = state
    return applied


#: per board: (spool dir mtime, last event id) when a drain last found nothing it could apply
_NOTHING_TO_DRAIN: dict[str, tuple[int, int]] = {}
