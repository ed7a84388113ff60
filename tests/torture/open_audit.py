"""Lock hygiene: an audit hook that sees every Python-level open of a live board's db / -wal / -shm / -journal
file and blames it on product code when any frame of the opening thread's stack is in hermes_cli/ or tui/.

Why: closing any fd to a SQLite file drops every POSIX lock the process holds on it (howtocorrupt.html section
2.2), which is how the closest existing system corrupted its boards. SQLite's own opens happen in C and are
not audited, which is exactly right: only Python code opening the files by hand is a hazard.

What counts as a live board file: a file named kanban.db[-wal|-shm|-journal] directly inside a board directory
(`<any HERMES_HOME>/kanban/boards/<slug>/`, so the throwaway homes of `demo` count too), or a pinned database
(given to the Auditor, or $HERMES_KANBAN_DB at the time of the open) with its sidecars. Backup and quarantine
copies (in `backups/` or `quarantine/` below a board, or archived boards in `boards/_archived/`) are other
files: opening those cannot drop the live file's locks, so they are not flagged.

The rule is DESIGN.md's: no plain file I/O on those files from a process that holds a connection to them. A
few reviewed product sites open them on purpose while this process holds none (restore's try-lock of SQLite's
lock bytes, the quarantine byte copy of a file SQLite cannot read). They are listed in REVIEWED_SITES with the
reason, and even they are flagged when, at the moment of the open, this process has any other fd on the same
file (which is what SQLite's own connection would be): closing the new fd would then drop that connection's
locks.

`sys.addaudithook` cannot be removed, so the hook is installed once and does nothing unless a Recorder is
active. Child processes are covered by `child_env()`: a sitecustomize.py on PYTHONPATH loads this file in
every Python child (the dispatcher's workers, `--all-boards` board processes, CLI workers) and appends
violations to a log file.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

BOARD_FILE_NAMES = ("kanban.db", "kanban.db-wal", "kanban.db-shm", "kanban.db-journal")
#: "<path inside the product>::<function qualname>" -> why that open is safe (only while no other fd is open
#: on it)
REVIEWED_SITES = {
    "hermes_cli/kanban/durability/restore.py::_BoardLocks.__init__": (
        "restore try-locks SQLite's lock bytes to prove no process uses the board; it holds no connection"
    ),
    "hermes_cli/kanban/store/health.py::_copy_bytes": (
        "quarantine byte copy of a file SQLite cannot read, only when this process holds no connection to it"
    ),
}
ENV_LOG = "HERMES_OPEN_AUDIT_LOG"
ENV_PRODUCT = "HERMES_OPEN_AUDIT_PRODUCT"


class Auditor:
    """The classification: which paths are live board files, which frames are product code."""

    SUFFIXES = tuple(n[len("kanban.db") :] for n in BOARD_FILE_NAMES)

    def __init__(self, product_dirs: list[str], pinned: list[str] | None = None) -> None:
        self.product_dirs = tuple(os.path.realpath(d).rstrip(os.sep) + os.sep for d in product_dirs)
        self.pinned = {os.path.realpath(p) for p in pinned or ()}

    def is_board_file(self, path: str) -> bool:
        real = os.path.realpath(path)
        pinned = set(self.pinned)
        if os.environ.get("HERMES_KANBAN_DB"):
            pinned.add(os.path.realpath(os.environ["HERMES_KANBAN_DB"]))
        if any(real == p + sfx for p in pinned for sfx in self.SUFFIXES):
            return True
        if os.path.basename(real) not in BOARD_FILE_NAMES:
            return False
        boards = os.path.dirname(os.path.dirname(real))
        return os.path.basename(boards) == "boards" and os.path.basename(os.path.dirname(boards)) == "kanban"

    def product_frame(self, frame: FrameType | None) -> tuple[str, str] | None:
        """(`file:line`, site key) of the innermost product frame on the stack; None when no product code is
        involved. The site key is `<package>/<path>::<qualname>`, as in REVIEWED_SITES."""
        while frame is not None:
            code = frame.f_code
            filename = code.co_filename
            for d in self.product_dirs:
                if filename.startswith(d):
                    rel = os.path.basename(d.rstrip(os.sep)) + "/" + filename[len(d) :]
                    return f"{filename}:{frame.f_lineno}", f"{rel}::{code.co_qualname}"
            frame = frame.f_back
        return None


def other_fds_on(path: str) -> list[int]:
    """This process's open fds on the same file as `path` (SQLite's own connection fds show up here)."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            fst = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the fd closed meanwhile (e.g. the listdir's own)
        if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
            found.append(int(name))
    return found


@dataclass
class Violation:
    path: str
    where: str
    site: str
    flags: int | None
    pid: int
    #: fds this process already had on the file at the time (non-empty: a connection's locks were at stake)
    other_fds: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "where": self.where,
            "site": self.site,
            "flags": self.flags,
            "pid": self.pid,
            "other_fds": self.other_fds,
        }


@dataclass
class Recorder:
    auditor: Auditor
    #: opens of live board files from product frames
    violations: list[Violation] = field(default_factory=list)
    #: opens from REVIEWED_SITES made while no other fd of this process was on the file (allowed, reported)
    reviewed: list[Violation] = field(default_factory=list)
    #: every audited open of a live board file, product or not (the test's own, e.g.)
    board_opens: int = 0
    #: when set, violations are also appended here as JSON lines (child processes)
    log_path: str | None = None

    def consider(self, path: object, flags: object, frame: FrameType | None) -> None:
        if isinstance(path, int) or path is None:
            return  # an fd being wrapped (os.fdopen): the open that made the fd was audited already
        try:
            p = os.fsdecode(path)  # type: ignore[arg-type]
        except TypeError:
            return
        if not self.auditor.is_board_file(p):
            return
        self.board_opens += 1
        found = self.auditor.product_frame(frame)
        if found is None:
            return
        where, site = found
        v = Violation(
            os.path.abspath(p),
            where,
            site,
            flags if isinstance(flags, int) else None,
            os.getpid(),
            other_fds_on(p),
        )
        if site in REVIEWED_SITES and not v.other_fds:
            self.reviewed.append(v)
            return
        self.violations.append(v)
        self.log(v.as_dict())

    def log(self, record: dict[str, object]) -> None:
        if not self.log_path:
            return
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)


_ACTIVE: list[Recorder] = []
_INSTALLED = False
_GUARD = threading.local()


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event != "open" or not _ACTIVE or getattr(_GUARD, "busy", False):
        return
    _GUARD.busy = True  # our own os.open of the log file must not re-enter
    try:
        frame = sys._getframe(1)
        for rec in list(_ACTIVE):
            rec.consider(args[0], args[2] if len(args) > 2 else None, frame)
    finally:
        _GUARD.busy = False


def install() -> None:
    global _INSTALLED
    if not _INSTALLED:
        sys.addaudithook(_hook)
        _INSTALLED = True


@contextmanager
def recording(auditor: Auditor) -> Iterator[Recorder]:
    install()
    rec = Recorder(auditor)
    _ACTIVE.append(rec)
    try:
        yield rec
    finally:
        _ACTIVE.remove(rec)


# -- child processes ---------------------------------------------------------------------------------------
SITECUSTOMIZE = """\
# Written by tests/torture/open_audit.py: load the lock-hygiene audit hook in every Python child process.
import importlib.util as _u
import sys as _sys
_spec = _u.spec_from_file_location("_hermes_open_audit", {path!r})
_mod = _u.module_from_spec(_spec)
_sys.modules["_hermes_open_audit"] = _mod
_spec.loader.exec_module(_mod)
_mod.install_from_env()
"""


def child_env(site_dir: str, log_path: str, product_dirs: list[str]) -> dict[str, str]:
    """Environment additions that make every Python child audit itself into `log_path`."""
    os.makedirs(site_dir, exist_ok=True)
    with open(os.path.join(site_dir, "sitecustomize.py"), "w", encoding="utf-8") as f:
        f.write(SITECUSTOMIZE.format(path=os.path.abspath(__file__)))
    pythonpath = os.pathsep.join(p for p in (site_dir, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": pythonpath, ENV_LOG: log_path, ENV_PRODUCT: os.pathsep.join(product_dirs)}


def install_from_env() -> None:
    """In a child: audit every board file (and $HERMES_KANBAN_DB), logging violations to $ENV_LOG."""
    log_path = os.environ.get(ENV_LOG)
    product = [d for d in os.environ.get(ENV_PRODUCT, "").split(os.pathsep) if d]
    if not log_path or not product:
        return
    rec = Recorder(Auditor(product), log_path=log_path)
    install()
    _ACTIVE.append(rec)
    rec.log({"started": os.getpid(), "argv": sys.argv[:4]})


def read_child_log(log_path: str) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """(violations, starts): what audited children flagged, and one record per child that had the hook."""
    try:
        with open(log_path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return [], []
    return [r for r in records if "started" not in r], [r for r in records if "started" in r]
