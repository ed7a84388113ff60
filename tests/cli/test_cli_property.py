"""Property: whatever the command line, a failing command changes nothing and prints exactly one `error:` line.

Hypothesis drives random command lines (commands of cli/tasks.py, cli/boards.py and cli/events.py, their real
options taken from the click tree, values from a pool of valid, invalid and hostile strings) against a board holding
a task in every status (and an expired lease, and a second board). For every command:
- the exit code is one of the contract's (0-4) and nothing prints a traceback or an "internal error";
- a non-zero exit leaves every board byte-for-byte equal in content (all rows of all tables, sqlite_sequence, the
  schema) and the set of boards unchanged, and stderr is exactly one line starting `error: `;
- with --json, stdout is JSON: the result, or `{"error": {"code", "message"}}`.
Commands that succeed may change the board; the next command of the same example then starts from that state.
Some commands run with HERMES_KANBAN_TASK / HERMES_KANBAN_RUN_ID set, as inside a worker.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hermes_cli.cli import kanban
from hermes_cli.kanban import Board

from .conftest import dump_home, invoke

#: the modules whose commands this property covers (other engineers' commands, e.g. a blocking dispatcher, are not
#: driven at random here)
MODULES = {"hermes_cli.cli.tasks", "hermes_cli.cli.boards", "hermes_cli.cli.events"}
#: options that wait for something by design (a follow mode would block the test)
BLOCKING = {"--follow"}


def _commands() -> list[tuple[tuple[str, ...], click.Command]]:
    out: list[tuple[tuple[str, ...], click.Command]] = []

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                walk(cmd, (*prefix, name))
            elif cmd.callback is not None and cmd.callback.__module__ in MODULES:
                out.append(((*prefix, name), cmd))

    walk(kanban, ())
    return out


COMMANDS = _commands()


@pytest.fixture
def template(engine: str) -> Iterator[dict[str, object]]:
    """A HERMES_HOME with two boards; the default one holds a task in every status. Built once per engine, copied
    per example (on PostgreSQL the boards' database too: `pg_url` made the template database)."""
    base = Path(tempfile.mkdtemp(prefix="hermes-prop-"))
    home = base / "home"
    old = os.environ.get("HERMES_HOME")
    os.environ["HERMES_HOME"] = str(home)
    try:
        ids: dict[str, str] = {}
        with Board.open() as b:
            for s in ("ready", "running", "review", "blocked", "done", "archived", "parent", "expired"):
                ids[s] = b.create_task(f"{s} task", review=s == "review", tenant="acme" if s == "ready" else None,
                                       idempotency_key=f"key-{s}")[0].id
            ids["todo"] = b.create_task("todo task", parents=[ids["parent"]])[0].id
            runs = [b.claim(ids["running"], ttl="1h"), b.claim(ids["review"]), b.claim(ids["expired"], ttl=0.001)]
            b.complete(ids["review"], runs[1].run_id)  # type: ignore[union-attr]
            b.block(ids["blocked"], reason="x")
            b.complete(ids["done"])
            b.archive(ids["archived"])
            b.comment(ids["ready"], "a comment")
        with Board.open("research", create=True) as r:
            r.create_task("on research")
        time.sleep(0.01)  # the expired lease is in the past for every example
        files = base / "files"
        files.mkdir()
        (files / "body.md").write_text("a body\n")
        (files / "binary.bin").write_bytes(b"\xff\xfe\x00\x89")
        (files / "dir").mkdir()
        yield {"home": home, "ids": ids, "run_ids": [str(c.run_id) for c in runs if c], "files": files,
               "url": os.environ.get("HERMES_KANBAN_URL")}
    finally:
        if old is None:
            os.environ.pop("HERMES_HOME", None)
        else:
            os.environ["HERMES_HOME"] = old
        shutil.rmtree(base)


def _values(t: dict[str, object]) -> st.SearchStrategy[str]:
    ids = list(t["ids"].values())  # type: ignore[union-attr]
    files = t["files"]
    assert isinstance(files, Path)
    fixed = [
        "", " ", "0", "1", "-1", "5", "1000", "1001", "-1001", "2.5", "1e3", "99999999999999999999",
        "-99999999999999999999", "abc", "90s", "0s", "30m", "2h", "1d", "366d", "-5m", "250ms", "ready", "done",
        "archived", "doing", "priority", "age", "newest", "random", "default", "research", "Research", "nope",
        "../escape", "a" * 65, "_archived", "-", "acme", "key-ready", "key-archived", "x\ny", "\t", "t_0123456789ab",
        "t_", "T_ABC", "bad \udcff byte", "\udce9", "naïve ✓", "; rm -rf /", "'unclosed", "{task_id}",
        str(files / "body.md"), str(files / "binary.bin"), str(files / "dir"), str(files / "missing"), "/proc/self/mem",
    ]
    # Real argv and environment strings cannot hold NUL, and their only lone surrogates are the U+DC80-U+DCFF that
    # Python's surrogateescape decoding makes of undecodable bytes (so "\ud800" can never reach hermes).
    text = st.text(st.characters(exclude_characters="\x00"), max_size=12).filter(_os_encodable)
    return st.one_of(st.sampled_from(ids), st.sampled_from(list(t["run_ids"])), st.sampled_from(fixed), text)  # type: ignore[arg-type]


def _os_encodable(s: str) -> bool:
    try:
        s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


@st.composite
def command_line(draw: st.DrawFn, t: dict[str, object]) -> list[str]:
    path, cmd = draw(st.sampled_from(COMMANDS))
    values = _values(t)
    argv: list[str] = list(path)
    if draw(st.integers(0, 9)) == 0:
        argv = ["--board", draw(values), *argv]
    n_args = sum(1 for p in cmd.params if isinstance(p, click.Argument))
    for _ in range(draw(st.integers(max(0, n_args - 1), n_args + 1))):
        argv.append(draw(values))
    options = [p for p in cmd.params if isinstance(p, click.Option) and not set(p.opts) & BLOCKING]
    for _ in range(draw(st.integers(0, 4))):
        opt = draw(st.sampled_from(options))
        argv.append(draw(st.sampled_from(opt.opts)))
        if not opt.is_flag:
            argv.append(draw(values))
    if draw(st.booleans()):
        argv.append("--json")
    if draw(st.integers(0, 19)) == 0:
        argv.append(draw(values))  # a stray extra token
    return ["kanban", *argv]


@pytest.fixture
def fresh_home(template: dict[str, object]) -> Iterator[object]:
    """A function that copies the template home to a new directory and points HERMES_HOME at it."""
    made: list[Path] = []
    url = template["url"]
    # PostgreSQL: the examples share one database, put back to the template's rows before each (CREATE DATABASE
    # ... TEMPLATE costs ~0.4 s a copy here; this costs a few ms). The first call also keeps the template's rows.
    saved = _pg_snapshot(str(url)) if url else None

    def make() -> Path:
        d = Path(tempfile.mkdtemp(prefix="hermes-example-"))
        made.append(d)
        shutil.copytree(template["home"], d / "home")  # type: ignore[arg-type]
        os.environ["HERMES_HOME"] = str(d / "home")
        if saved is not None:
            _pg_reset(str(url), saved)
        return d / "home"

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


#: tables in an order that inserts parents before the rows that reference them
_TABLE_ORDER = ("meta", "schema_migrations", "tasks", "links", "runs", "comments", "events", "dispatcher_lease",
                "subscriptions", "dispatchers")


def _pg_snapshot(url: str) -> dict[str, dict[str, object]]:
    """Every board schema's rows (with their columns) and identity sequences' positions."""
    import psycopg

    out: dict[str, dict[str, object]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for (schema,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'hk\\_%'").fetchall():
            tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                                 "WHERE table_schema = %s", (schema,))}
            assert tables <= set(_TABLE_ORDER), tables
            rows: dict[str, object] = {}
            for t in (t for t in _TABLE_ORDER if t in tables):
                cur = conn.execute(f'SELECT * FROM "{schema}"."{t}"')
                assert cur.description is not None
                rows[t] = ([d.name for d in cur.description], cur.fetchall())
            seqs = conn.execute("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = %s",
                                (schema,)).fetchall()
            out[schema] = {"rows": rows, "seqs": seqs}
    return out


def _pg_reset(url: str, saved: dict[str, dict[str, object]]) -> None:
    """Put the database back to `saved` in one transaction: boards made since are dropped, the template's boards
    get their rows and sequence positions back."""
    import psycopg

    from hermes_cli.kanban.core.paths import BoardPaths
    from hermes_cli.kanban.store.pg.opening import connect

    with psycopg.connect(url) as conn:
        now = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'hk\\_%'")}
        for schema in now - set(saved):
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    for schema in set(saved) - now:  # `boards rm SLUG --drop-schema` succeeded: make the board's schema again
        meta = dict(saved[schema]["rows"]["meta"][1])  # type: ignore[index]
        d = Path(tempfile.mkdtemp(prefix="hermes-reset-"))
        connect(BoardPaths(str(meta["board_slug"]), d, d / "kanban.db"), url, create=True).close()
        shutil.rmtree(d)
    with psycopg.connect(url) as conn:
        for schema, snap in saved.items():
            rows = snap["rows"]
            assert isinstance(rows, dict)
            conn.execute("TRUNCATE " + ", ".join(f'"{schema}"."{t}"' for t in rows))
            for t, (cols, values) in rows.items():
                if values:
                    with conn.cursor() as cur:
                        cur.executemany(f'INSERT INTO "{schema}"."{t}" ({", ".join(cols)}) VALUES '
                                        f'({", ".join(["%s"] * len(cols))})', values)
            for name, last in snap["seqs"]:  # type: ignore[attr-defined]
                conn.execute("SELECT setval(%s, %s, %s)", (f'"{schema}"."{name}"', last or 1, last is not None))


def _wants_json(argv: list[str]) -> bool:
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_random_command_lines_never_change_the_board_when_they_fail(
    template: dict[str, object], fresh_home, data: st.DataObject
) -> None:
    # fresh_home is function-scoped but stateless between examples: each example calls it for its own copy.
    home = fresh_home()
    for _ in range(data.draw(st.integers(1, 4), label="commands")):
        argv = data.draw(command_line(template), label="argv")
        worker_env = data.draw(st.one_of(st.just({}), st.fixed_dictionaries(
            {"HERMES_KANBAN_TASK": _values(template), "HERMES_KANBAN_RUN_ID": _values(template)})), label="env")
        before = dump_home(home)
        os.environ.update(worker_env)  # as inside a worker; the autouse fixture cleared these before the test
        try:
            r = invoke(argv, stdin=data.draw(st.sampled_from(["", "from stdin\n"]), label="stdin"))
        finally:
            for k in worker_env:
                os.environ.pop(k, None)
        assert r.code in (0, 1, 2, 3, 4), (argv, r)
        assert "Traceback" not in r.err and "internal error" not in r.err, (argv, r)
        if r.code != 0:
            lines = r.err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (argv, r)
            assert dump_home(home) == before, (argv, r)
            if _wants_json(argv):
                err = json.loads(r.out)["error"]
                assert set(err) == {"code", "message"} and err["message"] == lines[0][len("error: "):], (argv, r)
            else:
                assert r.out == "", (argv, r)
        elif _wants_json(argv):
            json.loads(r.out)
