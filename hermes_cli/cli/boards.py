"""Board commands: init, boards list|create|rm."""

from __future__ import annotations

import os
import shutil
import time

import click

from ..kanban.board import Board
from ..kanban.errors import InvalidValue, NotFound
from ..kanban.paths import boards_root, list_slugs, resolve, validate_slug
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
    _refuse_if_in_use(paths.db)
    if delete:
        shutil.rmtree(paths.dir)
        where = None
    else:
        archive = boards_root() / "_archived"
        archive.mkdir(mode=0o700, exist_ok=True)
        where = archive / f"{slug}-{time.strftime('%Y%m%dT%H%M%S')}"
        os.rename(paths.dir, where)
    emit(as_json, {"slug": slug, "deleted": delete, "archived_to": str(where) if where else None},
         f"board {slug} " + ("deleted" if delete else f"moved to {where}"))


def _refuse_if_in_use(db: os.PathLike[str]) -> None:
    """Refuse to remove a board any process still has open (removing it under them would lose their writes)."""
    import psutil

    target = os.fspath(db)
    names = {target, target + "-wal", target + "-shm"}
    for proc in psutil.process_iter(["pid"]):
        try:
            for f in proc.open_files():
                if f.path in names:
                    raise InvalidValue(f"board file {target} is open in process {proc.pid}; stop it first")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
