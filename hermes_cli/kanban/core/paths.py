"""The one place that decides where boards live.

`HERMES_HOME` (default `~/.hermes`) holds `kanban/boards/<slug>/kanban.db`. `HERMES_KANBAN_DB` pins a database file
directly; its directory is then the board directory. Board directories are 0700 and never followed through symlinks.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidValue, NotFound, StorageError

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DEFAULT_BOARD = "default"
DB_NAME = "kanban.db"
#: a board that lives in PostgreSQL has this file (its URL) in its directory instead of DB_NAME
PG_URL_NAME = "postgres.url"


def hermes_home() -> Path:
    # Absolute: workers run with their workspace as cwd, so a relative home would point them at another board.
    return Path(os.environ.get("HERMES_HOME") or Path.home() / ".hermes").expanduser().absolute()


def boards_root() -> Path:
    return hermes_home() / "kanban" / "boards"


def validate_slug(slug: str) -> str:
    if not SLUG_RE.match(slug or ""):
        raise InvalidValue(
            f"invalid board slug {slug!r}: use 1-64 chars of a-z, 0-9, '_' or '-', starting with a letter or digit"
        )
    return slug


@dataclass(frozen=True, slots=True)
class BoardPaths:
    """Where one board keeps its files."""

    slug: str
    dir: Path
    db: Path

    @property
    def notify_dir(self) -> Path:
        return self.dir / "notify"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def workspaces_dir(self) -> Path:
        return self.dir / "workspaces"

    @property
    def spool_dir(self) -> Path:
        return self.dir / "spool"

    @property
    def host_spool_dir(self) -> Path:
        """The spool for this board kept under HERMES_HOME: used when the board's own directory must not be written
        (the board is missing, or the pinned file is not a board). Keyed by the db path, so the reports are found
        when a board is back at that path."""
        import hashlib  # here: only a spool outside the board dir needs it, and worker commands start faster without

        digest = hashlib.sha256(str(self.db).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.slug)[:64] or "board"
        return hermes_home() / "kanban" / "spool" / f"{safe}-{digest}"

    @property
    def backups_dir(self) -> Path:
        return self.dir / "backups"

    @property
    def config_file(self) -> Path:
        return self.dir / "config.toml"

    @property
    def sidecars(self) -> tuple[Path, Path]:
        return Path(f"{self.db}-wal"), Path(f"{self.db}-shm")


def current_board_file() -> Path:
    """Where `boards switch` keeps the board used when none is named (hermes-agent's `kanban/current`)."""
    return hermes_home() / "kanban" / "current"


def current_board() -> str | None:
    """The slug `boards switch` chose, or None (never switched, or switched back to default)."""
    try:
        with open(current_board_file(), encoding="utf-8") as f:
            slug = f.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None  # never switched (an unusable HERMES_HOME is reported where the board is opened)
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(
            f"cannot read the current board from {current_board_file()}: {exc} (fix it with: hermes kanban boards "
            "switch default)"
        ) from None
    if not SLUG_RE.match(slug):
        raise InvalidValue(
            f"{current_board_file()} names an invalid board {slug!r} (fix it with: hermes kanban boards switch default)"
        )
    return slug


def set_current_board(slug: str) -> None:
    """Persist the board used when none is named: written to a temp file, fsynced and renamed into place."""
    path = current_board_file()
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".current.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, f"{slug}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot record the current board in {path}: {exc.strerror}") from None


def clear_current_board() -> None:
    """Forget the board `boards switch` chose (its board was removed): commands use `default` again."""
    try:
        os.unlink(current_board_file())
    except FileNotFoundError:
        pass  # nothing was chosen: nothing to forget
    except OSError as exc:
        raise StorageError(f"cannot reset the current board in {current_board_file()}: {exc.strerror}") from None


def resolve(board: str | None = None, db_path: str | os.PathLike[str] | None = None) -> BoardPaths:
    """Pick the board: an explicit db path, then `--board`, then `HERMES_KANBAN_DB`, `HERMES_KANBAN_BOARD`, the board
    `boards switch` chose, default.

    An explicit `--board` wins over a pinned `HERMES_KANBAN_DB` from the environment, so a worker (whose environment
    pins its own board) can still address another board on purpose.
    """
    if db_path is None and board is None:
        db_path = os.environ.get("HERMES_KANBAN_DB") or None
    if db_path is not None:
        db = Path(db_path).expanduser().absolute()
        slug = board or os.environ.get("HERMES_KANBAN_BOARD") or db.parent.name
        return BoardPaths(slug=slug, dir=db.parent, db=db)
    slug = validate_slug(board or os.environ.get("HERMES_KANBAN_BOARD") or current_board() or DEFAULT_BOARD)
    d = boards_root() / slug
    return BoardPaths(slug=slug, dir=d, db=d / DB_NAME)


def list_slugs() -> list[str]:
    root = boards_root()
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:  # not a directory, permission denied: "no boards" would be a lie
        raise StorageError(f"cannot list boards in {root}: {exc.strerror} (check HERMES_HOME)") from None
    # A board is its SQLite file, or the `postgres.url` naming the PostgreSQL database it lives in (store/engine.py),
    # or, when HERMES_KANBAN_URL puts every board of this host in PostgreSQL, a board directory made here when the
    # board was first opened.
    in_postgres = bool(os.environ.get("HERMES_KANBAN_URL", "").strip())
    return sorted(p.name for p in entries
                  if SLUG_RE.match(p.name) and ((p / DB_NAME).exists() or (p / PG_URL_NAME).exists()
                                                or (in_postgres and p.is_dir())))


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) 0700; refuse a symlink or a non-directory in its place.

    An existing directory is tightened to 0700 only when it is ours: created here, or inside the boards root. A
    directory a user pinned a board into (HERMES_KANBAN_DB=/tmp/board.db) is theirs and keeps its mode.
    """
    created = False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                os.mkdir(path, 0o700)
                created = True
            except FileExistsError:
                pass
            st = os.lstat(path)
        except OSError as exc:
            raise StorageError(
                f"cannot create board directory {path}: {exc.strerror} (check HERMES_HOME and HERMES_KANBAN_DB)"
            ) from None
    except OSError as exc:  # e.g. a parent is a regular file (ENOTDIR)
        raise StorageError(
            f"cannot use board directory {path}: {exc.strerror} (check HERMES_HOME and HERMES_KANBAN_DB)"
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise StorageError(f"{path} is a symlink; refusing to follow it (move it aside and retry)")
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{path} exists and is not a directory (move it aside and retry)")
    ours = created or boards_root().absolute() in Path(path).absolute().parents
    if ours and stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def check_db_path(db: Path, *, must_exist: bool) -> bool:
    """Validate the db path without opening it. Returns whether it exists."""
    try:
        st = os.lstat(db)
    except FileNotFoundError:
        if must_exist:
            raise NotFound(f"board database {db} does not exist (see: hermes kanban init)") from None
        return False
    except OSError as exc:  # e.g. a parent is a regular file (ENOTDIR): no board can live there
        raise StorageError(
            f"cannot use board database path {db}: {exc.strerror} (check HERMES_HOME and HERMES_KANBAN_DB)"
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise StorageError(f"board database {db} is a symlink; refusing to follow it (use the real path)")
    if stat.S_ISDIR(st.st_mode):
        raise StorageError(f"board database {db} is a directory, not a file (point HERMES_KANBAN_DB at a .db file)")
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"board database {db} is not a regular file")
    return True
