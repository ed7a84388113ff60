"""Board commands: init, boards list|create|rm."""

from __future__ import annotations

import os
import secrets
import shutil
import time

import click

from ..kanban.backup import holders
from ..kanban.board import Board
from ..kanban.errors import Conflict, NotFound, StorageError
from ..kanban.paths import boards_root, list_slugs, resolve, validate_slug
from ..kanban.store.connection import exclusive_open_lock
from .common import board_slug, command, common, emit, json_option, kanban


@command("init")
@common
def kanban_init(board: str | None, as_json: bool) -> None:
    """Create the board database if it does not exist (idempotent).

    Example:

    \b
        HERMES_HOME=/tmp/h hermes kanban init --json
    """
    with Board.open(board_slug(board), create=True) as b:
        data = {"board": b.slug, "db": str(b.paths.db), "tasks": sum(b.counts().values())}
    emit(as_json, data, f"board {data['board']} ready at {data['db']}")


@kanban.group(name="boards")
def kanban_boards() -> None:
    """List, create and remove boards.

    Example:

    \b
        hermes kanban boards create research
        hermes kanban boards list
    """


@kanban_boards.command(name="list")
@json_option
def kanban_boards_list(as_json: bool) -> None:
    """List boards under $HERMES_HOME/kanban/boards.

    Example:

    \b
        hermes kanban boards list --json
    """
    slugs = list_slugs()
    out = [{"slug": s, "db": str(resolve(s).db)} for s in slugs]
    emit(as_json, out, "\n".join(slugs) if slugs else "no boards (see: hermes kanban boards create SLUG)")


@kanban_boards.command(name="create")
@click.argument("slug")
@json_option
def kanban_boards_create(slug: str, as_json: bool) -> None:
    """Create a board.

    Example:

    \b
        hermes kanban boards create research
    """
    validate_slug(slug)
    existed = resolve(slug).db.exists()
    with Board.open(slug, create=True) as b:
        data = {"slug": b.slug, "db": str(b.paths.db), "created": not existed}
    emit(as_json, data, f"board {slug} {'created' if not existed else 'already exists'} at {data['db']}")


@kanban_boards.command(name="rm")
@click.argument("slug")
@click.option("--delete", is_flag=True, help="Delete the files instead of moving them to boards/_archived/.")
@json_option
def kanban_boards_rm(slug: str, delete: bool, as_json: bool) -> None:
    """Remove a board: moved to boards/_archived/<slug>-<time> (or deleted with --delete).

    Example:

    \b
        hermes kanban boards rm research
    """
    paths = resolve(validate_slug(slug))
    if not paths.dir.is_dir():
        raise NotFound(f"board {slug} does not exist (see: hermes kanban boards list)")
    where = None
    # Held for the whole move: no connection is open now and none can open until the files are gone.
    with exclusive_open_lock(paths):
        others = holders(paths)  # openers that are not hermes (e.g. a sqlite3 shell) hold no open-lock
        if others:
            raise Conflict(f"board {slug} is open in process {others[0]['pid']} ({others[0]['name']}); stop it first")
        try:
            if delete:
                shutil.rmtree(paths.dir)
            else:
                archive = boards_root() / "_archived"
                archive.mkdir(mode=0o700, exist_ok=True)
                where = archive / f"{slug}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
                os.rename(paths.dir, where)
        except OSError as exc:
            raise StorageError(f"cannot remove board {slug}: {exc}") from None
    emit(as_json, {"slug": slug, "deleted": delete, "archived_to": str(where) if where else None},
         f"board {slug} " + ("deleted" if delete else f"moved to {where}"))
