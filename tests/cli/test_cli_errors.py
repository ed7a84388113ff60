"""Bad input never changes the board and never prints a traceback: exact `error:` lines, exit codes, --json errors.

Every case runs against a board holding a task in every status; the whole HERMES_HOME (every board, every row,
sqlite_sequence included) is dumped before and after.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hermes_cli.kanban import Board

from .conftest import Cli, dump_db

NO_SUCH = "t_0123456789ab"


@pytest.fixture
def tasks(board: Board) -> dict[str, str]:
    """ids of a task in each status (and the run id of the running one under 'run')."""
    ids: dict[str, str] = {}
    for status in ("ready", "running", "review", "blocked", "done", "archived", "parent"):
        ids[status] = board.create_task(f"{status} task", review=status == "review")[0].id
    ids["todo"] = board.create_task("todo task", parents=[ids["parent"]])[0].id
    ids["run"] = str(board.claim(ids["running"]).run_id)  # type: ignore[union-attr]
    review_claim = board.claim(ids["review"])
    board.complete(ids["review"], review_claim.run_id)  # type: ignore[union-attr]
    board.block(ids["blocked"], reason="x")
    board.complete(ids["done"])
    board.archive(ids["archived"])
    return ids


# (argv with {status} placeholders, exit code, error message with the same placeholders)
CASES: list[tuple[list[str], int, str]] = [
    # unknown ids and malformed ids
    (["show", NO_SUCH], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["show", "T_ABC"], 1, "invalid task id 'T_ABC': task ids look like t_3fa2b1c4d5e6 (see: hermes kanban list)"),
    (["complete", NO_SUCH], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["claim", NO_SUCH], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["comment", NO_SUCH, "hi"], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["link", NO_SUCH, "{ready}"], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["unlink", "{parent}", "{ready}"], 1, "no link {parent} -> {ready} (see: hermes kanban show {ready})"),
    (["archive", "nope"], 1, "invalid task id 'nope': task ids look like t_3fa2b1c4d5e6 (see: hermes kanban list)"),
    (["list", "--parent", NO_SUCH], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["events", "--task", "x"], 1, "invalid task id 'x': task ids look like t_3fa2b1c4d5e6 (see: hermes kanban list)"),
    (["create", "x", "--parent", NO_SUCH], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["create", "x", "--parent", "{archived}"], 1,
     "parent {archived} is archived; pick a live parent (see: hermes kanban list)"),
    # invalid transitions
    (["claim", "{done}"], 1, "task {done} is done; only ready tasks can be claimed"),
    (["claim", "{todo}"], 1, "task {todo} is waiting on its parents (see: hermes kanban show {todo})"),
    (["complete", "{review}"], 1,
     "cannot complete task {review}: it is in review (see: hermes kanban approve {review})"),
    (["complete", "{done}"], 1, "cannot complete task {done}: it is already done"),
    (["complete", "{archived}"], 1, "cannot complete task {archived}: it is archived"),
    (["block", "{blocked}"], 1, "cannot block task {blocked}: it is already blocked "
                                "(see: hermes kanban unblock {blocked})"),
    (["unblock", "{ready}"], 1, "cannot unblock task {ready}: it is ready, not blocked"),
    (["approve", "{ready}"], 1, "cannot approve task {ready}: it is ready, not in review"),
    (["request-changes", "{done}", "more"], 1, "cannot request changes on task {done}: it is done, not in review"),
    (["request-changes", "{review}", "  "], 1,
     'say what needs to change, e.g. hermes kanban request-changes t_3fa2 "add tests"'),
    (["request-review", "{done}"], 1, "cannot request-review task {done}: it is already done"),
    (["archive", "{archived}"], 1, "task {archived} is already archived"),
    (["link", "{ready}", "{ready}"], 1, "cannot link {ready} to itself"),
    (["link", "{todo}", "{parent}"], 1, "linking {todo} -> {parent} would create a cycle ({parent} is an ancestor)"),
    (["link", "{ready}", "{done}"], 1, "task {done} is done; only todo, ready or blocked tasks can gain a parent"),
    # conflicts: live claims and stale runs
    (["claim", "{running}"], 3, None),  # message carries the lease time; checked by prefix below
    (["complete", "{running}"], 3, "task {running} is claimed by run {run}; workers pass --run-id "
                                   "(or HERMES_KANBAN_RUN_ID); to override the live claim use --force"),
    (["block", "{running}", "why"], 3, "task {running} is claimed by run {run}; workers pass --run-id "
                                       "(or HERMES_KANBAN_RUN_ID); to override the live claim use --force"),
    (["complete", "{running}", "--run-id", "999"], 3,
     "run 999 is not the current run of task {running} (run {run}); complete refused, nothing changed"),
    (["heartbeat", "{running}", "--run-id", "999"], 3,
     "run 999 is not the current run of task {running} (run {run}); heartbeat refused, nothing changed"),
    (["block", "{running}", "--run-id", "999"], 3,
     "run 999 is not the current run of task {running} (run {run}); block refused, nothing changed"),
    (["request-review", "{running}", "--run-id", "999"], 3,
     "run 999 is not the current run of task {running} (run {run}); request-review refused, nothing changed"),
    (["heartbeat", "{done}", "--run-id", "{run}"], 3,
     "run {run} is not the current run of task {done} (status done); heartbeat refused, nothing changed"),
    # bad values
    (["create", ""], 1, 'task title is empty: give a short description, e.g. hermes kanban create "fix login"'),
    (["create", "  \t "], 1, 'task title is empty: give a short description, e.g. hermes kanban create "fix login"'),
    (["create", "two\nlines"], 1, "task title contains control characters; put multi-line text in --body"),
    (["create", "x" * 501], 1, "task title is 501 characters; the limit is 500 (put details in --body)"),
    (["create", "x", "--priority", "high"], 1, "invalid priority 'high': use an integer from -1000 to 1000"),
    (["create", "x", "--priority", "1001"], 1, "invalid priority '1001': use an integer from -1000 to 1000"),
    (["create", "x", "--priority", "-1001"], 1, "invalid priority '-1001': use an integer from -1000 to 1000"),
    (["create", "x", "--priority", "2.5"], 1, "invalid priority '2.5': use an integer from -1000 to 1000"),
    (["create", "x", "--priority", ""], 1, "invalid priority '': use an integer from -1000 to 1000"),
    (["create", "x", "--max-runtime", "forever"], 1,
     "invalid max-runtime 'forever': use a number with an optional unit, e.g. 90s, 30m, 2h, 1d"),
    (["create", "x", "--max-runtime", "0"], 1, "invalid max-runtime '0': must be more than 0 and at most 365d"),
    (["create", "x", "--max-runtime", "-5m"], 1,
     "invalid max-runtime '-5m': use a number with an optional unit, e.g. 90s, 30m, 2h, 1d"),
    (["create", "x", "--max-runtime", "366d"], 1, "invalid max-runtime '366d': must be more than 0 and at most 365d"),
    (["create", "x", "--max-retries", "101"], 1, "invalid max-retries 101: use an integer from 0 to 100"),
    (["create", "x", "--max-retries", "lots"], 2, "Invalid value for '--max-retries': 'lots' is not a valid integer."),
    (["create", "x", "--tenant", ""], 1, "invalid tenant '': 1-200 printable characters"),
    (["create", "x", "--idempotency-key", " "], 1, "invalid idempotency key ' ': 1-200 printable characters"),
    (["create", "x", "--command", "sh -c 'oops"], 1, "invalid --command \"sh -c 'oops\": No closing quotation"),
    (["create", "x", "--body", "a", "--body-file", "-"], 1, "use either --body or --body-file, not both"),
    (["claim", "{ready}", "--ttl", "0s"], 1, "invalid lease ttl '0s': must be more than 0 and at most 365d"),
    (["claim", "{ready}", "--ttl", "soon"], 1,
     "invalid lease ttl 'soon': use a number with an optional unit, e.g. 90s, 30m, 2h, 1d"),
    (["heartbeat", "{running}", "--run-id", "{run}", "--ttl", "1y"], 1,
     "invalid lease ttl '1y': use a number with an optional unit, e.g. 90s, 30m, 2h, 1d"),
    (["claim", "{ready}", "--worker", ""], 1, "invalid worker '': 1-200 printable characters"),
    (["comment", "{ready}", " "], 1, 'comment is empty: say something, e.g. hermes kanban comment t_3fa2 "looks good"'),
    (["list", "--status", "doing"], 1,
     "invalid status 'doing': use one of triage, todo, ready, running, review, blocked, done, archived"),
    (["list", "--limit", "-1"], 1, "invalid limit -1: must be 0 or more"),
    (["list", "--sort", "random"], 2,
     "Invalid value for '--sort': 'random' is not one of 'priority', 'age', 'newest', 'updated'."),
    (["complete", "{running}", "--run-id", "99999999999999999999"], 2,
     "Invalid value for '--run-id': 99999999999999999999 is not in the range 1<=x<=9223372036854775807."),
    (["heartbeat", "{running}", "--run-id", "99999999999999999999"], 2,
     "Invalid value for '--run-id': 99999999999999999999 is not in the range 1<=x<=9223372036854775807."),
    (["complete", "{running}", "--run-id", "0"], 2,
     "Invalid value for '--run-id': 0 is not in the range 1<=x<=9223372036854775807."),
    (["heartbeat", "{running}", "--run-id", "-5"], 2,
     "Invalid value for '--run-id': -5 is not in the range 1<=x<=9223372036854775807."),
    (["unblock", "{blocked}", "--reason", "bad\udcff"], 1,
     "invalid reason 'bad\\udcff': it is not valid UTF-8 (check the encoding of your input)"),
    (["events", "--after", "-99999999999999999999"], 1,
     "invalid number -99999999999999999999: integers must fit in 64 bits"),
    (["create", "bad \udcff byte"], 1, "invalid text 'bad \\udcff byte': it is not valid UTF-8 "
                                       "(check the encoding of your input)"),
    (["list", "--search", "\udce9"], 1,
     "invalid text '\\udce9': it is not valid UTF-8 (check the encoding of your input)"),
    # boards and slugs
    (["--board", "Research", "list"], 1,
     "invalid board slug 'Research': use 1-64 chars of a-z, 0-9, '_' or '-', starting with a letter or digit"),
    (["list", "--board", "-x"], 1,
     "invalid board slug '-x': use 1-64 chars of a-z, 0-9, '_' or '-', starting with a letter or digit"),
    (["create", "x", "--board", "a" * 65], 1,
     f"invalid board slug '{'a' * 65}': use 1-64 chars of a-z, 0-9, '_' or '-', starting with a letter or digit"),
    (["--board", "nope", "create", "x"], 1, "board nope does not exist (see: hermes kanban boards create nope)"),
    (["boards", "create", "../escape"], 1,
     "invalid board slug '../escape': use 1-64 chars of a-z, 0-9, '_' or '-', starting with a letter or digit"),
    (["boards", "rm", "nope"], 1, "board nope does not exist (see: hermes kanban boards list)"),
    (["boards", "rm", "_archived"], 1,
     "invalid board slug '_archived': use 1-64 chars of a-z, 0-9, '_' or '-', starting with a letter or digit"),
    # usage (user input quoted in an error is escaped: the error stays one line)
    (["list", "extra\rarg"], 2, "Got unexpected extra argument (extra\\rarg)"),
    (["show", "two\nlines"], 1, "invalid task id 'two\\nlines': task ids look like t_3fa2b1c4d5e6 "
                                 "(see: hermes kanban list)"),
    (["frobnicate"], 2, "No such command 'frobnicate'."),
    (["create"], 2, "Missing argument 'TITLE'."),
    (["create", "x", "--bogus"], 2, "No such option '--bogus'."),
    (["show"], 2, "Missing argument 'TASK_ID'."),
    (["heartbeat", "{running}", "--run-id", "one"], 2,
     "Invalid value for '--run-id': 'one' is not a valid integer range."),
]


def _fill(text: str, ids: dict[str, str]) -> str:
    for k, v in ids.items():
        text = text.replace("{" + k + "}", v)
    return text


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
@pytest.mark.parametrize(("argv", "code", "message"), CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_changes_nothing(
    cli: Cli, tasks: dict[str, str], home_dump, argv: list[str], code: int, message: str | None, as_json: bool
) -> None:
    argv = [_fill(a, tasks) for a in argv] + (["--json"] if as_json else [])
    before = home_dump()
    r = cli(*argv)
    assert r.code == code, r
    assert "Traceback" not in r.err and "internal error" not in r.err
    line = r.error_line
    assert line.startswith("error: ")
    if message is not None:
        if message.startswith("No such option"):
            assert line.startswith(f"error: {message}")  # click may add " Did you mean ...?"
        else:
            assert line == f"error: {_fill(message, tasks)}"
    if as_json:
        err = json.loads(r.out)["error"]
        assert set(err) == {"code", "message"} and err["message"] == line[len("error: "):]
    else:
        assert r.out == ""
    assert home_dump() == before


def test_the_live_claim_conflict_message(cli: Cli, tasks: dict[str, str], board: Board) -> None:
    lease = json.loads(cli("show", tasks["running"], "--json").out)["lease_expires_at"]
    r = cli("claim", tasks["running"])
    assert (r.code, r.err) == (3, f"error: task {tasks['running']} is claimed by run {tasks['run']} until {lease} "
                                  f"(see: hermes kanban show {tasks['running']})\n")


def test_claim_with_nothing_ready(cli: Cli, tasks: dict[str, str], board: Board) -> None:
    board.claim(tasks["ready"])
    board.claim(tasks["parent"])
    before = dump_db(board.paths.db)
    r = cli("claim")
    assert (r.code, r.err) == (1, "error: no ready task to claim (see: hermes kanban list --status ready)\n")
    assert dump_db(board.paths.db) == before


def test_claim_with_nothing_ready_does_not_commit_the_reclaim_of_expired_leases(
    cli: Cli, tasks: dict[str, str], board: Board
) -> None:
    """Regression (found by test_cli_property's invariant): a failing claim must not change the board."""
    import time

    expired = board.create_task("expired", max_retries=0)[0].id
    board.claim(expired, ttl=0.001)
    time.sleep(0.01)
    before = dump_db(board.paths.db)
    r = cli("claim", "--tenant", "nobody")
    assert (r.code, r.err) == (1, "error: no ready task to claim (see: hermes kanban list --status ready)\n")
    assert dump_db(board.paths.db) == before


def test_json_error_codes(cli: Cli, tasks: dict[str, str]) -> None:
    codes = {
        ("show", NO_SUCH): "not_found",
        ("claim", tasks["done"]): "invalid_transition",
        ("create", ""): "invalid_value",
        ("link", tasks["todo"], tasks["parent"]): "cycle",
        ("claim", tasks["running"]): "already_claimed",
        ("complete", tasks["running"], "--run-id", "999"): "stale_run",
        ("frobnicate",): "usage",
    }
    for argv, code in codes.items():
        assert json.loads(cli(*argv, "--json").out)["error"]["code"] == code, argv


# -- files that are not what they should be ----------------------------------------------------------------------------
def test_body_file_that_does_not_exist(cli: Cli, tasks: dict[str, str], home_dump, tmp_path: Path) -> None:
    missing = tmp_path / "missing.md"
    before = home_dump()
    r = cli("create", "x", "--body-file", str(missing))
    assert (r.code, r.err) == (1, f"error: cannot read --body-file {missing}: FileNotFoundError: [Errno 2] No such "
                                  f"file or directory: '{missing}'\n")
    assert home_dump() == before


def test_body_file_that_is_a_directory(cli: Cli, tasks: dict[str, str], home_dump, tmp_path: Path) -> None:
    before = home_dump()
    r = cli("create", "x", "--body-file", str(tmp_path))
    assert (r.code, r.err) == (1, f"error: cannot read --body-file {tmp_path}: IsADirectoryError: [Errno 21] Is a "
                                  f"directory: '{tmp_path}'\n")
    assert home_dump() == before


def test_body_file_that_is_not_text(cli: Cli, tasks: dict[str, str], home_dump, tmp_path: Path) -> None:
    f = tmp_path / "image.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    before = home_dump()
    r = cli("create", "x", "--body-file", str(f))
    assert r.code == 1
    assert r.error_line.startswith(
        f"error: cannot read --body-file {f}: UnicodeDecodeError: 'utf-8' codec can't decode"
    )
    assert home_dump() == before


def test_body_file_that_cannot_be_read(cli: Cli, tasks: dict[str, str], home_dump) -> None:
    """Files whose read fails in the kernel (EIO; a path through a regular file). Mode-000 files are no test here:
    the suite runs as root in CI, and root reads them."""
    before = home_dump()
    for path, detail in (
        ("/proc/self/mem", "OSError: [Errno 5] Input/output error"),
        ("/etc/hostname/x", "NotADirectoryError: [Errno 20] Not a directory: '/etc/hostname/x'"),
    ):
        r = cli("create", "x", "--body-file", path)
        assert (r.code, r.err) == (1, f"error: cannot read --body-file {path}: {detail}\n")
    assert home_dump() == before


@pytest.mark.sqlite_only  # a pinned SQLite file
def test_a_directory_as_hermes_kanban_db(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    d = tmp_path / "board.db"
    d.mkdir()
    monkeypatch.setenv("HERMES_KANBAN_DB", str(d))
    for argv in (["list"], ["create", "x"], ["init", "--json"]):
        r = cli(*argv)
        assert r.code == 4
        assert r.error_line == (
            f"error: board database {d} is a directory, not a file (point HERMES_KANBAN_DB at a .db file)"
        )
    assert list(d.iterdir()) == []


@pytest.mark.sqlite_only  # a pinned SQLite file
def test_a_text_file_posing_as_a_database(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "kanban.db"
    f.write_text("# my notes\n- buy milk\n" * 50)
    content, mtime = f.read_bytes(), f.stat().st_mtime_ns
    monkeypatch.setenv("HERMES_KANBAN_DB", str(f))
    for argv in (["list"], ["create", "x"], ["claim", "--json"], ["init"]):
        r = cli(*argv)
        assert r.code == 4, r
        assert r.error_line.startswith(f"error: board database {f} ")
        assert "Traceback" not in r.err
    assert f.read_bytes() == content and f.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("kanban.db-")) == []


@pytest.mark.sqlite_only  # PRAGMA user_version; tests/pg has the PostgreSQL one
def test_a_board_from_a_newer_hermes(cli: Cli, board: Board) -> None:
    from hermes_cli.kanban.store.schema import LATEST

    board.create_task("x")
    board.db.execute(f"PRAGMA user_version={LATEST + 9}")
    before = dump_db(board.paths.db)
    r = cli("list")
    assert (r.code, r.err) == (4, f"error: board {board.paths.db} has schema v{LATEST + 9}, newer than this hermes "
                                  f"(v{LATEST}); upgrade hermes-kanban\n")
    assert dump_db(board.paths.db) == before


def test_bad_environment_values(cli: Cli, tasks: dict[str, str], home_dump, monkeypatch: pytest.MonkeyPatch) -> None:
    before = home_dump()
    monkeypatch.setenv("HERMES_KANBAN_TASK", tasks["running"])
    monkeypatch.setenv("HERMES_KANBAN_RUN_ID", "abc")
    r = cli("complete")
    assert (r.code, r.err) == (1, "error: HERMES_KANBAN_RUN_ID='abc' is not a run id (an integer)\n")
    monkeypatch.setenv("HERMES_KANBAN_RUN_ID", "99999999999999999999")
    r = cli("complete")
    assert (r.code, r.err) == (1, "error: invalid run id 99999999999999999999: run ids are whole numbers from 1 to "
                                  "9223372036854775807\n")
    r = cli("heartbeat")
    assert (r.code, r.err) == (1, "error: invalid run id 99999999999999999999: run ids are whole numbers from 1 to "
                                  "9223372036854775807\n")
    monkeypatch.delenv("HERMES_KANBAN_TASK")
    r = cli("complete")
    assert (r.code, r.err) == (1, "error: no task given: pass a task id (or run inside a worker, where "
                                  "HERMES_KANBAN_TASK is set)\n")
    if not os.environ.get("HERMES_KANBAN_URL"):  # a SQLite setting: a PostgreSQL board never reads it
        monkeypatch.setenv("HERMES_KANBAN_SYNCHRONOUS", "off")
        r = cli("create", "x")
        assert (r.code, r.err) == (1, "error: HERMES_KANBAN_SYNCHRONOUS='off' is not one of normal, full, extra\n")
        monkeypatch.delenv("HERMES_KANBAN_SYNCHRONOUS")
    monkeypatch.setenv("HERMES_KANBAN_BOARD", "Not A Slug")
    r = cli("list")
    assert r.code == 1 and r.error_line.startswith("error: invalid board slug 'Not A Slug'")
    assert home_dump() == before


def test_an_unusable_hermes_home_is_a_storage_error_not_a_crash(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Regression: a HERMES_HOME that is a file (or sits on a path that cannot hold directories) used to end in
    "internal error: NotADirectoryError"."""
    home_file = tmp_path / "home-is-a-file"
    home_file.write_text("oops")
    monkeypatch.setenv("HERMES_HOME", str(home_file))
    board_dir = home_file / "kanban" / "boards" / "default"
    for argv in (["list"], ["create", "x"], ["init", "--json"]):
        r = cli(*argv)
        assert r.code == 4, r
        assert r.error_line == (
            f"error: cannot use board directory {board_dir}: Not a directory (check HERMES_HOME and HERMES_KANBAN_DB)"
        )
    assert home_file.read_text() == "oops"
    monkeypatch.setenv("HERMES_HOME", "/proc/hermes-cannot-live-here")
    r = cli("create", "x")
    assert (r.code, r.err) == (4, "error: cannot create board directory /proc/hermes-cannot-live-here/kanban/boards/"
                                  "default: No such file or directory (check HERMES_HOME and HERMES_KANBAN_DB)\n")
