"""The "look now" signal of a board, whichever engine holds it: the FIFO doorbell for a SQLite board (every writer is
on this host and rings it after COMMIT), LISTEN/NOTIFY for a PostgreSQL board (writers are on every host; the server
delivers the notification at COMMIT). Both have one interface (fileno/wait/drain/poke/repair/close), so the
dispatcher, `events --follow` and the TUI wait the same way on either. psycopg is imported only for a PostgreSQL
board (pg_listen is imported inside the branch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..core.paths import BoardPaths
from ..store.engine import is_postgres
from .doorbell import Doorbell


class Bell(Protocol):
    def fileno(self) -> int: ...

    def wait(self, timeout: float | None) -> bool: ...

    def drain(self) -> None: ...

    def poke(self) -> None: ...

    def repair(self) -> bool: ...

    def close(self) -> None: ...


def open_bell(db: object, paths: BoardPaths, name: str, *, warn: Callable[[str], None] | None = None) -> Bell:
    """The board's bell for one reader named `name` (listening before it returns: read your cursor after this)."""
    if is_postgres(db):
        from .pg_listen import PgBell

        url = getattr(db, "url")  # noqa: B009 - PgDatabase.url; `db` is typed loosely to keep psycopg out of imports
        return PgBell(url, paths.slug, name, warn=warn)
    return Doorbell(paths.notify_dir, name)
