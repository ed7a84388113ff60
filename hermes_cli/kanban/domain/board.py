"""The public API of one board: every state change the CLI, the dispatcher, the TUI and the tests make.

Each method validates its input first, then makes its change and writes its event in one IMMEDIATE transaction,
then rings the doorbell. A failing check raises a HermesError from inside the transaction, which rolls back: bad
input never changes the board.

Fencing: a claim opens a run whose id is the fencing token. heartbeat/complete/block/request_review with a run id
succeed only while that run is the task's current open run (`tasks.current_run_id`, status `running`); anything
else raises StaleRun (exit 3) and changes nothing.
"""

from __future__ import annotations

import os
from typing import cast

from ..core.errors import NotFound
from ..core.paths import DEFAULT_BOARD, current_board, resolve
from ..live import doorbell
from ..store.connection import Database
from ..store.engine import board_exists, open_database
from ..store.schema import migrate
from .board_core import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    BOARD_SETTINGS,
    DEFAULT_LEASE_S,
    DEFAULT_MAX_RETRIES,
    SORTS,
    new_task_id,
    retry_delay,
)
from .board_editing import Editing
from .board_finishing import Finishing
from .board_queries import Queries
from .board_review import Review

__all__ = ["BACKOFF_BASE_S", "BACKOFF_CAP_S", "BOARD_SETTINGS", "DEFAULT_LEASE_S", "DEFAULT_MAX_RETRIES", "SORTS",
           "Board", "new_task_id", "retry_delay", "ring_doorbell_after_commit"]


def ring_doorbell_after_commit(db: Database) -> None:
    """Install the doorbell ring as `db`'s after-commit hook: every write that inserted an event rings the board's
    doorbell after its COMMIT (the store itself never imports the notification layer)."""
    notify_dir = db.paths.notify_dir  # computed once: BoardPaths.notify_dir builds a new Path each call
    # Through the module attribute at ring time, so a wrapped doorbell.ring (tests/notify/delivery_writer.py) is used.
    db.on_event_commit(lambda: doorbell.ring(notify_dir))


class Board(Queries, Editing, Finishing, Review):
    """One open board. Not thread-safe: open one Board per thread (connections are cheap).

    Its methods live in one module per concern (board_queries, board_editing, board_links, board_claims,
    board_finishing, board_review, on board_core's plumbing); this class only opens it."""

    @classmethod
    def open(
        cls, board: str | None = None, db_path: str | None = None, *, create: bool | None = None,
        vfs: str | None = None, url: str | None = None,
    ) -> Board:
        """Open a board by slug or db path. The default board and pinned db paths are created on first use;
        any other slug must have been created (`hermes kanban boards create SLUG`). `vfs` names a registered SQLite
        VFS (tests/torture's power-cut simulation); None is SQLite's default. `url` opens (or with `create`, makes)
        the board in that PostgreSQL database whatever its directory says (`boards create SLUG --url`)."""
        paths = resolve(board, db_path)
        if create is None:
            # A slug from HERMES_KANBAN_BOARD must exist like one from --board: a typo never makes a new board.
            pinned = db_path is not None or (board is None and bool(os.environ.get("HERMES_KANBAN_DB")))
            create = pinned or paths.slug == DEFAULT_BOARD
        switched = board is None and db_path is None and not os.environ.get("HERMES_KANBAN_BOARD")
        if not create and url is None and board_exists(paths) is False:
            if switched and current_board() == paths.slug:
                raise NotFound(f"board {paths.slug}, chosen with boards switch, does not exist (see: hermes kanban "
                               "boards switch default)")
            raise NotFound(f"board {paths.slug} does not exist (see: hermes kanban boards create {paths.slug})")
        # PgDatabase has Database's interface (store/pg/database.py): the domain is typed against the SQLite one
        try:
            db = cast(Database, open_database(paths, create=create, vfs=vfs, url=url))
        except NotFound:
            # a PostgreSQL board's server says it is not there (the local disk cannot tell): the same words
            if switched and not create and current_board() == paths.slug:
                raise NotFound(f"board {paths.slug}, chosen with boards switch, does not exist (see: hermes kanban "
                               "boards switch default)") from None
            raise
        ring_doorbell_after_commit(db)
        try:
            if isinstance(db, Database):  # a PostgreSQL board was migrated as it opened (store/pg/opening.py)
                migrate(db)
        except BaseException:
            db.close()
            raise
        return cls(db)
