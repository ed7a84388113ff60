"""Which engine a board lives in, and opening it there. Nothing PostgreSQL-related is imported for a SQLite board.

A board is in PostgreSQL when `HERMES_KANBAN_URL` is set (every board of this host, e.g. a whole fleet pointed at one
server) or when its directory holds `postgres.url` (written 0600 by `boards create SLUG --url URL`). Otherwise it is
the SQLite file `kanban.db` in its directory, as always. Either way the board's directory is local to the host and
keeps its spool, logs, config and workspaces.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

from ..core.errors import InvalidValue
from ..core.paths import BoardPaths, ensure_private_dir
from .connection import Database

if TYPE_CHECKING:
    from .pg.database import PgDatabase

#: either engine's connection (same interface; see store/pg/database.py)
AnyDatabase = Union[Database, "PgDatabase"]

URL_ENV = "HERMES_KANBAN_URL"
URL_FILE = "postgres.url"
SCHEMES = ("postgresql://", "postgres://")


def check_url(url: str) -> str:
    url = url.strip()
    if not url.startswith(SCHEMES):
        raise InvalidValue(f"invalid board URL {url!r}: use postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME")
    return url


def board_url(paths: BoardPaths) -> str | None:
    """The PostgreSQL URL of this board, or None for a SQLite board."""
    env = os.environ.get(URL_ENV, "").strip()
    if env:
        return check_url(env)
    try:
        text = (paths.dir / URL_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    return check_url(text)


def save_board_url(paths: BoardPaths, url: str) -> None:
    """Record that this board lives at `url` (0600: the URL may carry a password)."""
    url = check_url(url)
    ensure_private_dir(paths.dir)
    target = paths.dir / URL_FILE
    tmp = paths.dir / (URL_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (url + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def is_postgres(db: object) -> bool:
    return getattr(db, "engine", "sqlite") == "postgres"


def open_database(paths: BoardPaths, *, create: bool, vfs: str | None = None) -> AnyDatabase:
    """Open the board in whichever engine holds it; SQLite boards are migrated by the caller (store.schema)."""
    url = board_url(paths)
    if url is None:
        from .opening import connect

        return connect(paths, create=create, vfs=vfs)
    from .pg.opening import connect as pg_connect

    return pg_connect(paths, url, create=create)


def board_exists(paths: BoardPaths) -> bool | None:
    """Whether the board exists, as far as the local disk can tell: None for a PostgreSQL board (the server says)."""
    if board_url(paths) is not None:
        return None
    return paths.db.exists()
