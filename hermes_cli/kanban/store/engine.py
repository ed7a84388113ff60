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
from ..core.paths import PG_URL_NAME, BoardPaths, ensure_private_dir
from .connection import Database

if TYPE_CHECKING:
    from .pg.database import PgDatabase

#: either engine's connection (same interface; see store/pg/database.py)
AnyDatabase = Union[Database, "PgDatabase"]

URL_ENV = "HERMES_KANBAN_URL"
URL_FILE = PG_URL_NAME
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


def redact_url(url: str) -> str:
    """The URL without its password, for messages and output (never print a board URL without this)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}" if user else f"{scheme}://{host}"


def is_postgres(db: object) -> bool:
    return getattr(db, "engine", "sqlite") == "postgres"


def wait_durable(db: object) -> None:
    """Return once every commit this connection can see is on disk. A write is visible a moment before it is
    durable on both engines (PostgreSQL: store/pg/database.py commits asynchronously inside the writers' turn and
    flushes after it; SQLite at FULL: store/wal_sync.py syncs the WAL after COMMIT, outside the write lock), so a
    reader that hands what it read to another system (the hub) calls this between reading and sending."""
    db.wait_durable()  # type: ignore[attr-defined]


def board_engine(paths: BoardPaths) -> str:
    return "sqlite" if board_url(paths) is None else "postgres"


def describe(paths: BoardPaths) -> dict[str, str]:
    """Where a board lives, for output: `db` (the SQLite file); a PostgreSQL board's `db` and `url` are its redacted
    URL, with `engine: postgres` (a SQLite board's output stays as it always was)."""
    url = board_url(paths)
    if url is None:
        return {"db": str(paths.db)}
    return {"engine": "postgres", "db": redact_url(url), "url": redact_url(url)}


def open_database(paths: BoardPaths, *, create: bool, vfs: str | None = None, url: str | None = None) -> AnyDatabase:
    """Open the board in whichever engine holds it (`url`: in that PostgreSQL database, whatever the board directory
    says); SQLite boards are migrated by the caller (store.schema)."""
    url = check_url(url) if url else board_url(paths)
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


def server_board_slugs() -> list[str]:
    """The boards in the database HERMES_KANBAN_URL names (every board of this host lives there), [] when unset."""
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        return []
    from .pg.opening import board_slugs

    return board_slugs(check_url(url))
