"""Board commands: init, boards list|create|rm|show|switch|rename (and hermes-agent's names for them)."""

from __future__ import annotations

import os
import secrets
import shutil
import time

import click

from hermes_cli.kanban.core.errors import Conflict, HermesError, InvalidValue, NotFound, StorageError, UsageError
from hermes_cli.kanban.core.paths import (
    DEFAULT_BOARD,
    BoardPaths,
    boards_root,
    clear_current_board,
    current_board,
    current_board_file,
    list_slugs,
    resolve,
    set_current_board,
    validate_slug,
)
from hermes_cli.kanban.domain.board import Board
from hermes_cli.kanban.domain.board_editing import check_board_settings
from hermes_cli.kanban.durability.backup import holders

from ..kanban.store import engine
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
        data = {"board": b.slug, **engine.describe(b.paths), "tasks": sum(b.counts().values())}
    emit(as_json, data, f"board {data['board']} ready at {data['db']}")


class BoardsGroup(click.Group):
    """`boards` with hermes-agent's other names for its subcommands; bare `boards` lists."""

    ALIASES = {"ls": "list", "new": "create", "remove": "rm", "delete": "rm", "use": "switch", "current": "show"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.ALIASES.get(cmd_name, cmd_name))


@kanban.group(name="boards", cls=BoardsGroup, invoke_without_command=True)
@click.pass_context
def kanban_boards(ctx: click.Context) -> None:
    """List, create, switch, rename and remove boards. Bare `boards` lists them.

    Example:

    \b
        hermes kanban boards create research
        hermes kanban boards list
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(kanban_boards_list)


def _settings(slug: str) -> dict[str, str | None]:
    """A board's settings; a board that cannot be opened (damaged, busy) lists without them (see: doctor)."""
    try:
        with Board.open(slug, create=False) as b:
            return b.settings()
    except HermesError:
        return {"name": None, "description": None}


@kanban_boards.command(name="list")
@click.option("--all", "include_archived", is_flag=True, help="Also list boards removed to boards/_archived.")
@json_option
def kanban_boards_list(as_json: bool = False, include_archived: bool = False) -> None:
    """List boards under $HERMES_HOME/kanban/boards (`ls` is the same command). The board `boards switch` chose
    is marked `(current)`.

    Example:

    \b
        hermes kanban boards list --json
    """
    slugs = sorted(set(list_slugs()) | set(engine.server_board_slugs()))
    chosen = current_board()
    in_use = resolve(None).slug
    out: list[dict[str, object]] = []
    for s in slugs:
        settings = _settings(s)
        out.append({"slug": s, **engine.describe(resolve(s)), "name": settings["name"],
                    "description": settings["description"], "current": s == in_use})
    archived: list[str] = []
    if include_archived:
        root = boards_root() / "_archived"
        archived = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        out += [{"slug": a, "db": str(root / a / "kanban.db"), "archived": True} for a in archived]

    def human() -> str:
        if not out:
            return "no boards (see: hermes kanban boards create SLUG)"
        lines = [s + (f"  {o['name']}" if o.get("name") else "") + ("  (current)" if chosen and o["current"] else "")
                 for s, o in zip(slugs, out, strict=False)]
        return "\n".join(lines + [f"{a}  (archived)" for a in archived])

    emit(as_json, out, human)


@kanban_boards.command(name="create")
@click.argument("slug")
@click.option("--name", default=None, help="A display name.")
@click.option("--description", default=None, help="What the board is for.")
@click.option("--icon", default=None, help="An icon for dashboards (stored).")
@click.option("--color", default=None, help="A color for dashboards (stored).")
@click.option("--default-workdir", default=None, metavar="PATH", help="Where its tasks' workers run by default.")
@click.option("--switch", "switch_to", is_flag=True, help="Make it the board used when none is named.")
@click.option("--url", default=None, metavar="URL",
              help="Keep the board in this PostgreSQL database (postgresql://USER@HOST[:PORT]/DBNAME; a password is "
                   "better kept in ~/.pgpass). $HERMES_KANBAN_URL puts every board there.")
@json_option
def kanban_boards_create(slug: str, name: str | None, description: str | None, icon: str | None, color: str | None,
                         default_workdir: str | None, switch_to: bool, url: str | None, as_json: bool) -> None:
    """Create a board (`new` is the same command). Creating one that exists is not an error; given settings are
    then updated. With --url the board lives in PostgreSQL (schema hk_SLUG), for a fleet on several hosts; each
    host runs this once to attach to it.

    Example:

    \b
        hermes kanban boards create research
        hermes kanban boards create ops --name "Operations" --description "on-call chores" --switch
        hermes kanban boards create team --url postgresql://kanban@db.internal/kanban
    """
    validate_slug(slug)
    paths = resolve(slug)
    if url is not None:
        url = engine.check_url(url)
        _check_attach(paths, url)
    if default_workdir is not None:
        default_workdir = os.path.abspath(os.path.expanduser(default_workdir))
    sqlite_existed = engine.board_url(paths) is None and url is None and paths.db.exists()
    given = {k: v for k, v in (("name", name), ("description", description), ("icon", icon), ("color", color),
                               ("default_workdir", default_workdir)) if v is not None}
    check_board_settings(given)  # before the board is created: bad input creates nothing
    with Board.open(slug, create=True, url=url) as b:
        pg_created = bool(getattr(b.db, "created", False)) if engine.is_postgres(b.db) else None
        settings = b.set_settings(**given) if given else b.settings()
        if url is not None and engine.board_url(paths) != url:
            engine.save_board_url(paths, url)  # after the schema exists: a failed create leaves no dangling URL
        where = engine.describe(paths)
        existed = sqlite_existed if pg_created is None else not pg_created
        data: dict[str, object] = {"slug": b.slug, **where, "created": not existed}
    if given:
        data["settings"] = settings
    if switch_to:
        set_current_board(slug)
        data["current"] = True
    emit(as_json, data, f"board {slug} {'created' if not existed else 'already exists'} at {data['db']}"
         + (f" (PostgreSQL schema {_schema(slug)})" if "url" in where else "")
         + (f"\nnow using board {slug}" if switch_to else ""))


def _schema(slug: str) -> str:
    from ..kanban.store.pg.database import schema_name

    return schema_name(slug)


def _check_attach(paths: BoardPaths, url: str) -> None:
    """`boards create SLUG --url URL` may make the board there or attach this host to it; never silently point a
    board that already lives somewhere else at another database."""
    current = engine.board_url(paths)
    if os.environ.get(engine.URL_ENV) and current != url:
        raise InvalidValue(f"HERMES_KANBAN_URL names another database ({engine.redact_url(current or '')}) and wins "
                           f"over --url for board {paths.slug}: unset it, or leave out --url")
    if current is None and paths.db.exists():
        raise Conflict(f"board {paths.slug} already exists in SQLite at {paths.db}; move it with: hermes kanban boards "
                       f"migrate {paths.slug} --to URL")
    if current is not None and current != url:
        raise Conflict(f"board {paths.slug} already lives at {engine.redact_url(current)}; move it with: hermes kanban "
                       f"boards migrate {paths.slug} --to sqlite, then --to URL")


def _exists(slug: str) -> bool:
    """Whether board `slug` exists: its SQLite file, or its schema on the PostgreSQL server (asked)."""
    paths = resolve(slug)
    known = engine.board_exists(paths)
    if known is not None:
        return known
    try:
        Board.open(slug, create=False).close()
    except NotFound:
        return False
    return True


@kanban_boards.command(name="show")
@json_option
def kanban_boards_show(as_json: bool) -> None:
    """Print the board used when none is named, and why (`current` is the same command).

    Example:

    \b
        hermes kanban boards show
    """
    chosen = current_board()
    env = os.environ.get("HERMES_KANBAN_BOARD") or None
    if os.environ.get("HERMES_KANBAN_DB"):
        source = "HERMES_KANBAN_DB"
    elif env:
        source = "HERMES_KANBAN_BOARD"
    elif chosen:
        source = f"boards switch ({current_board_file()})"
    else:
        source = "default"
    paths = resolve(None)
    where = engine.describe(paths)
    emit(as_json, {"slug": paths.slug, **where, "source": source}, paths.slug)  # bare: scripts use $(boards show)


@kanban_boards.command(name="switch")
@click.argument("slug")
@json_option
def kanban_boards_switch(slug: str, as_json: bool) -> None:
    """Make SLUG the board used when none is named (`use` is the same command); kept in
    $HERMES_HOME/kanban/current. $HERMES_KANBAN_BOARD and --board still win.

    Example:

    \b
        hermes kanban boards switch research
    """
    validate_slug(slug)
    if slug != DEFAULT_BOARD and not _exists(slug):
        raise NotFound(f"board {slug} does not exist (see: hermes kanban boards create {slug})")
    set_current_board(slug)
    emit(as_json, {"slug": slug, "current": True}, f"now using board {slug}")


@kanban_boards.command(name="rename")
@click.argument("slug")
@click.argument("name")
@json_option
def kanban_boards_rename(slug: str, name: str, as_json: bool) -> None:
    """Change a board's display name (the slug never changes).

    Example:

    \b
        hermes kanban boards rename research "Research papers"
    """
    validate_slug(slug)
    if slug != DEFAULT_BOARD and not _exists(slug):
        raise NotFound(f"board {slug} does not exist (see: hermes kanban boards list)")
    with Board.open(slug, create=slug == DEFAULT_BOARD) as b:
        settings = b.set_settings(name=name)
    emit(as_json, {"slug": slug, **settings}, f"board {slug} is now named {settings['name']}")


@kanban_boards.command(name="set-default-workdir")
@click.argument("words", nargs=-1, metavar="[SLUG] PATH")
@click.option("--clear", is_flag=True, help="Remove the board's default workdir (workers run in scratch dirs).")
@json_option
def kanban_boards_set_default_workdir(words: tuple[str, ...], clear: bool, as_json: bool) -> None:
    """Set where the board's tasks run when they name no --workspace (dispatcher workers start there), and the
    repository a `--workspace worktree` task's git worktree is made from. PATH must be an existing directory; it is
    kept absolute. With one argument it is the PATH of the board used when none is named (--board, else
    $HERMES_KANBAN_BOARD, else `boards switch`).

    Example:

    \b
        hermes kanban boards set-default-workdir ~/src/app
        hermes kanban boards set-default-workdir research ~/papers
        hermes kanban boards set-default-workdir research --clear
    """
    if clear:
        if len(words) > 1:
            raise UsageError("with --clear give at most the board: boards set-default-workdir [SLUG] --clear")
        slug, path = (words[0] if words else None), None
    elif len(words) in (1, 2):
        slug, path = (words[0] if len(words) == 2 else None), words[-1]
    else:
        raise UsageError("give the directory: hermes kanban boards set-default-workdir [SLUG] PATH (or --clear)")
    paths = resolve(validate_slug(slug) if slug is not None else board_slug(None))
    if paths.slug != DEFAULT_BOARD and not _exists(paths.slug):
        raise NotFound(f"board {paths.slug} does not exist (see: hermes kanban boards create {paths.slug})")
    workdir = None
    if path is not None:
        workdir = os.path.abspath(os.path.expanduser(path))
        if not os.path.isdir(workdir):
            raise InvalidValue(f"default workdir {workdir} is not an existing directory; create it first "
                               f"(mkdir -p {workdir})")
    with Board.open(paths.slug, create=paths.slug == DEFAULT_BOARD) as b:
        b.set_settings(default_workdir=workdir)
    emit(as_json, {"slug": paths.slug, "default_workdir": workdir},
         f"board {paths.slug}: " + (f"default workdir {workdir}" if workdir else "no default workdir"))


@kanban_boards.command(name="rm")
@click.argument("slug")
@click.option("--delete", is_flag=True, help="Delete the files instead of moving them to boards/_archived/.")
@click.option("--drop-schema", is_flag=True,
              help="PostgreSQL board: also DROP its schema, i.e. every task, run and event of it, for every host. "
                   "Without it the data stays in PostgreSQL and only this host's directory is removed.")
@json_option
def kanban_boards_rm(slug: str, delete: bool, drop_schema: bool, as_json: bool) -> None:
    """Remove a board: moved to boards/_archived/<slug>-<time> (or deleted with --delete). For a PostgreSQL board
    this removes this host's directory (its URL file, spool, logs) and keeps the board's data in PostgreSQL (other
    hosts still use it; `boards create SLUG --url URL` attaches again), unless --drop-schema drops its schema too
    (refused while any hermes connection to the board is open).

    Example:

    \b
        hermes kanban boards rm research
        hermes kanban boards rm team --drop-schema
    """
    paths = resolve(validate_slug(slug))
    url = engine.board_url(paths)
    if not paths.dir.is_dir() and not (url is not None and drop_schema):
        raise NotFound(f"board {slug} does not exist (see: hermes kanban boards list)")
    if drop_schema and url is None:
        raise InvalidValue(f"board {slug} is a SQLite board: --drop-schema is for PostgreSQL boards (leave it out)")
    dropped = None
    if drop_schema and url is not None:
        from ..kanban.store.pg.opening import drop_schema as drop

        dropped = drop(paths, url)
    where = None
    if not paths.dir.is_dir():  # a fleet's board (HERMES_KANBAN_URL) this host never opened: only the schema
        emit(as_json, {"slug": slug, "deleted": delete, "archived_to": None, "engine": "postgres",
                       "dropped_schema": dropped}, f"board {slug}: dropped schema {dropped}")
        return
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
    if current_board() == slug:
        clear_current_board()  # the board used when none is named is gone: back to default, not to an error
    data: dict[str, object] = {"slug": slug, "deleted": delete, "archived_to": str(where) if where else None}
    human = f"board {slug} " + ("deleted" if delete else f"moved to {where}")
    if url is not None:
        data.update({"engine": "postgres", "dropped_schema": dropped,
                     "kept_schema": None if dropped else _schema(slug), "url": engine.redact_url(url)})
        human += (f"; dropped its PostgreSQL schema {dropped}" if dropped else
                  f"; its data stays in PostgreSQL (schema {_schema(slug)} at {engine.redact_url(url)}; "
                  "drop it with --drop-schema)")
    emit(as_json, data, human)


@kanban_boards.command(name="migrate")
@click.argument("slug")
@click.option("--to", "to", required=True, metavar="URL|sqlite",
              help="postgresql://... to move the board into PostgreSQL, or `sqlite` to bring it back to a local file.")
@json_option
def kanban_boards_migrate(slug: str, to: str, as_json: bool) -> None:
    """Move a board between engines with all its history (tasks, links, runs, comments, events, subscriptions,
    settings); no run id (fencing token) or event id is ever handed out twice after the move. Refused while the
    board is in use (stop its dispatchers, workers and TUIs first); on any failure the board stays where it was.
    Progress goes to stderr.

    Example:

    \b
        hermes kanban boards migrate team --to postgresql://kanban@db.internal/kanban
        hermes kanban boards migrate team --to sqlite --json
    """
    from ..kanban.durability.migrate import migrate, progress_printer

    paths = resolve(validate_slug(slug))
    result = migrate(paths, to, progress=progress_printer(True))
    data = result.as_dict()
    rows = sum(n for t, n in result.rows.items() if t != "meta")
    emit(as_json, data, f"board {slug} moved from {data['from']} to {data['to']} ({rows} rows, "
         f"{result.seconds:.1f}s); the old copy: {data['moved_aside']}")
