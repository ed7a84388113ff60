"""The completion spool: where a worker's report goes when the board cannot take it (DESIGN.md "Never lose a
completion").

One JSON file per task+run in `<board dir>/spool/`, written durably (temp file, fsync, link into place, fsync the
directory), 0600, never through a symlink. It lives beside the database, not in it, so it works when the database is
corrupt, read-only, locked past its retries or cannot be opened at all. `reconcile.py` applies it; applied files move
to `spool/applied/`, reports that can never apply (the task is already done) to `spool/skipped/`.

The first report spooled for a task+run wins, like on the board itself (a run's first report closes it): repeating it
is a no-op, a different report for the same run is refused as a conflict.

A report is validated (`check_report`) before the board is tried and again when its file is read back, with the same
rules, so a value the board would refuse is never spooled, and a file that does not pass (written by an older
version, or by hand) is listed as invalid instead of stopping every other report: `reconcile.apply` moves it to
`spool/invalid/` with the reason beside it.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import Conflict, HermesError, InvalidValue, StorageError
from ..core.fileio import write_json_atomic
from ..core.models import iso
from ..core.paths import BoardPaths, ensure_private_dir
from ..core.values import MAX_BODY, check_block_kind, check_metadata, check_report_text, check_task_id
from ..store.connection import fsync_dir, known_board_dir
from ..store.engine import board_url

SPOOL_FORMAT = 1
KINDS = ("complete", "block")
#: subdirectories of the spool for reports that were applied, that can never apply, and files that are not reports
APPLIED, SKIPPED, INVALID = "applied", "skipped", "invalid"
#: run ids are SQLite rowids: 1 .. 2**63-1
MAX_RUN_ID = 2**63 - 1
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
    #: the rest of the report, when given: `result` and `metadata` (complete), `block_kind` (block)
    extra: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path), "kind": self.kind, "task_id": self.task_id, "run_id": self.run_id,
            "summary": self.summary, "force": self.force, "spooled_at": iso(self.spooled_at), "source": self.source,
            "error": self.error, **({"extra": self.extra} if self.extra else {}),
        }

    def same_report(self, other: SpooledReport) -> bool:
        return (self.kind, self.task_id, self.run_id, self.summary, self.force, self.extra or None) == (
            other.kind, other.task_id, other.run_id, other.summary, other.force, other.extra or None)


def check_run_id(run_id: object) -> int | None:
    """A run id as the board stores it (None: a person's report without a run)."""
    if run_id is None:
        return None
    if not isinstance(run_id, int) or isinstance(run_id, bool) or not 1 <= run_id <= MAX_RUN_ID:
        raise InvalidValue(f"invalid run id {run_id!r}: run ids are whole numbers from 1 to {MAX_RUN_ID}")
    return run_id


def check_summary(summary: object, what: str = "summary") -> str | None:
    """A report's summary (a block's reason): text the board can store (same limit as a task body, valid UTF-8)."""
    if summary is None:
        return None
    if not isinstance(summary, str):
        raise InvalidValue(f"invalid {what} {summary!r}: it must be text")
    if len(summary) > MAX_BODY:
        raise InvalidValue(f"the {what} is {len(summary)} characters; the limit is {MAX_BODY}")
    try:
        summary.encode("utf-8")
    except UnicodeEncodeError as exc:
        around = summary[max(0, exc.start - 20) : exc.end + 20]
        raise InvalidValue(f"invalid {what} {around!r}: it is not valid UTF-8 (check the encoding of your input)"
                           ) from None
    return summary


def check_report(kind: str, task_id: object, run_id: object, summary: object) -> None:
    """Everything about a report that does not depend on the board. The CLI runs it before trying the board (bad
    input is refused on both paths, never spooled) and the spool reader runs it on every file."""
    if kind not in KINDS:
        raise InvalidValue(f"cannot spool a {kind!r} report: only {', '.join(KINDS)}")
    check_task_id(task_id)  # type: ignore[arg-type]
    check_run_id(run_id)
    check_summary(summary, "reason" if kind == "block" else "summary")


#: what a report may carry besides its summary, and the check of each
EXTRA_KEYS = {"complete": ("result", "metadata"), "block": ("block_kind",)}


def check_extra(kind: str, extra: object) -> dict[str, Any] | None:
    """A report's extra fields (see SpooledReport.extra), checked as the board checks them; None when empty."""
    if extra is None:
        return None
    if not isinstance(extra, dict):
        raise InvalidValue(f"invalid extra fields {extra!r}: expected an object")
    unknown = set(extra) - set(EXTRA_KEYS.get(kind, ()))
    if unknown:
        raise InvalidValue(f"a {kind} report cannot carry {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    if extra.get("result") is not None:
        out["result"] = check_report_text(extra["result"], "result")
    if extra.get("metadata") is not None:
        out["metadata"] = check_metadata(extra["metadata"])
    if extra.get("block_kind") is not None:
        out["block_kind"] = check_block_kind(extra["block_kind"])
    return {k: v for k, v in out.items() if v is not None} or None


def spool_dir_for(paths: BoardPaths) -> Path:
    """Where a report for this board is spooled: beside the board (`<board dir>/spool/`) when its database is there
    in a directory hermes keeps boards in; otherwise (the board was removed or moved, or the pinned path is not a
    board, e.g. HERMES_KANBAN_DB=/etc/passwd) the host spool under HERMES_HOME, so nothing lands in a foreign
    directory. Both are read back by `pending` (reconcile-completions, the dispatcher's drain)."""
    here = paths.db.exists() or (paths.dir.is_dir() and board_url(paths) is not None)  # PostgreSQL: no file here
    if here and known_board_dir(paths):
        return paths.spool_dir
    return paths.host_spool_dir


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
    extra: dict[str, Any] | None = None,
    directory: Path | None = None,
) -> tuple[SpooledReport, bool]:
    """Write one report durably. Returns (the report on disk, whether this call wrote it).

    Raises Conflict when a different report for the same task+run is already spooled, StorageError when the spool
    itself cannot be written (then nothing is durable and the caller must fail). `directory` overrides
    `spool_dir_for` (restore salvages into the board's own spool while its db is moved aside).
    """
    check_report(kind, task_id, run_id, summary)
    extra = check_extra(kind, extra)
    now = time.time()
    report = SpooledReport(
        path=(directory or spool_dir_for(paths)) / file_name(task_id, run_id), kind=kind, task_id=task_id,
        run_id=run_id, summary=summary, force=bool(force), spooled_at=now, source=source,
        error=None if error is None else {"code": error.code, "message": error.message}, extra=extra,
    )
    import socket  # here, not at the top: only a spooling report needs it (the worker commands start faster)

    data = {
        "format": SPOOL_FORMAT, "kind": kind, "task_id": task_id, "run_id": run_id, "summary": summary,
        "force": bool(force), "spooled_at": now, "source": source, "error": report.error, "board": paths.slug,
        "db": str(paths.db), "host": socket.gethostname(), "pid": os.getpid(),
    }
    if extra:
        data["extra"] = extra  # only when given: a report without extras is written exactly as before
    try:
        where = report.path.parent
        ensure_private_dir(where)
        tmp = where / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
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
        fsync_dir(where)
    except OSError as exc:
        raise StorageError(
            f"cannot write the spool {report.path.parent} ({exc.strerror or exc}); the {kind} report for {task_id} "
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
        if not isinstance(d, dict):
            return "not a spool report (not a JSON object)"
        kind, task_id, run_id, summary = d["kind"], d["task_id"], d.get("run_id"), d.get("summary")
        check_report(kind, task_id, run_id, summary)
        spooled_at = float(d.get("spooled_at") or 0.0)
        if not 0.0 <= spooled_at < 1e11:  # NaN and absurd times too: models.iso() must be able to render it
            return f"invalid spooled_at {d.get('spooled_at')!r}"
        error = d.get("error")
        extra = check_extra(kind, d.get("extra"))
        return SpooledReport(
            path=path, kind=kind, task_id=task_id, run_id=run_id, summary=summary,
            force=bool(d.get("force")), spooled_at=spooled_at,
            source=str(d.get("source") or "spooled"), error=error if isinstance(error, dict) else None, extra=extra,
        )
    except InvalidValue as exc:
        return exc.message
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        return f"not a spool report ({exc.__class__.__name__}: {exc})"


def _entries(paths: BoardPaths) -> list[os.DirEntry[str]]:
    """The pending report files of the board's own spool, then of its host spool (reports spooled while the board
    was missing or its path was not a board)."""
    found: list[os.DirEntry[str]] = []
    for d in (paths.spool_dir, paths.host_spool_dir):
        try:
            with os.scandir(d) as it:
                found.extend(sorted((e for e in it if e.name.endswith(".json") and not e.name.startswith(".")),
                                    key=lambda e: e.name))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


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
    return _move_out(paths, report.path, where)


def set_aside(paths: BoardPaths, file: str | Path, problem: str) -> Path | None:
    """Move a file that is not a valid report to `spool/invalid/`, with `<name>.reason.json` beside it saying why.
    The file is kept as it was (evidence: it may hold a worker's words), and no longer holds up the spool."""
    target = _move_out(paths, Path(file), INVALID)
    if target is not None:
        write_json_atomic(target.with_name(target.name + ".reason.json"),
                          {"file": target.name, "was": str(file), "problem": problem, "moved_at": iso(time.time())})
        fsync_dir(target.parent)
    return target


def set_aside_files(paths: BoardPaths) -> list[str]:
    """The files `set_aside` moved to spool/invalid/ that are still there (their .reason.json not counted)."""
    try:
        names = os.listdir(paths.spool_dir / INVALID)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(str(paths.spool_dir / INVALID / n) for n in names
                  if not n.endswith(".reason.json") and not n.startswith("."))


def _move_out(paths: BoardPaths, src: Path, where: str) -> Path | None:
    target_dir = src.parent / where  # within the spool the file is in (the board's or the host's): never EXDEV
    ensure_private_dir(target_dir)
    target = target_dir / src.name
    n = 1
    # One pending file per name, so two reconciles never race for the same new name: the loser's rename finds its
    # source gone (FileNotFoundError) instead of overwriting anything.
    while os.path.lexists(target):
        target = target_dir / f"{src.stem}.{n}{src.suffix}"
        n += 1
    try:
        os.rename(src, target)
    except FileNotFoundError:
        return None
    fsync_dir(target_dir)
    fsync_dir(src.parent)
    return target
