"""Every task, board and event command in-process: exact output (human and --json), exit codes, `error:` lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hermes_cli.kanban import Board

from .conftest import Cli, invoke

TASK_KEYS = [
    "id", "title", "body", "status", "priority", "tenant", "command", "idempotency_key", "review_required",
    "max_runtime_s", "max_retries", "attempts", "current_run_id", "lease_expires_at", "retry_at", "summary",
    "created_at", "updated_at", "completed_at", "assignee", "created_by", "skills", "result", "block_kind",
    "workspace", "branch",
]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TASK_ID = re.compile(r"^t_[0-9a-f]{12}$")


def ok(r, out: str | None = None) -> str:
    assert (r.code, r.err) == (0, ""), r
    if out is not None:
        assert r.out == out
    return r.out


def fails(r, code: int, line: str) -> None:
    assert r.code == code, r
    assert r.err == f"error: {line}\n"


# -- create ------------------------------------------------------------------------------------------------------------
def test_create_prints_the_new_id(cli: Cli) -> None:
    out = ok(cli("create", "write the report"))
    assert TASK_ID.match(out.strip()) and out.endswith("\n") and out.count("\n") == 1


def test_create_json(cli: Cli, tmp_path: Path) -> None:
    body = tmp_path / "body.md"
    body.write_text("from a file\nnaïve ✓\n", encoding="utf-8")
    r = cli("create", "summarise logs", "--priority", "5", "--body-file", str(body), "--command",
            "python summarise.py {task_id}", "--tenant", "acme", "--idempotency-key", "logs-1", "--max-runtime", "30m",
            "--max-retries", "2", "--review", "--json")
    d = json.loads(ok(r))
    assert list(d) == [*TASK_KEYS, "task_id", "created"]
    assert {k: d[k] for k in ("title", "body", "status", "priority", "tenant", "command", "idempotency_key",
                              "review_required", "max_runtime_s", "max_retries", "attempts", "created")} == {
        "title": "summarise logs", "body": "from a file\nnaïve ✓\n", "status": "ready", "priority": 5,
        "tenant": "acme", "command": "python summarise.py {task_id}", "idempotency_key": "logs-1",
        "review_required": True, "max_runtime_s": 1800.0, "max_retries": 2, "attempts": 0, "created": True,
    }
    assert ISO.match(d["created_at"]) and d["created_at"] == d["updated_at"]
    again = json.loads(ok(cli("create", "other title", "--idempotency-key", "logs-1", "--json")))
    assert (again["id"], again["created"], again["title"]) == (d["id"], False, "summarise logs")


def test_create_body_from_stdin(cli: Cli) -> None:
    d = json.loads(ok(cli("create", "t", "--body-file", "-", "--json", stdin="piped\n")))
    assert d["body"] == "piped\n"


def test_create_with_parents_is_todo(cli: Cli) -> None:
    p = ok(cli("create", "p")).strip()
    d = json.loads(ok(cli("create", "c", "--parent", p, "--json")))
    assert d["status"] == "todo"


# -- list --------------------------------------------------------------------------------------------------------------
LINE = re.compile(r"^(t_[0-9a-f]{12})  (\S+) +p(-?\d+) +\s*(\d+[smhd])  (.*)$")


def test_list_human_and_json(cli: Cli) -> None:
    assert ok(cli("list")) == "no tasks\n"
    assert ok(cli("list", "--json")) == "[]\n"
    a = ok(cli("create", "alpha", "--priority", "5", "--tenant", "acme")).strip()
    b = ok(cli("create", "beta")).strip()
    lines = ok(cli("list")).splitlines()
    parsed = [LINE.match(ln).groups() for ln in lines]  # type: ignore[union-attr]
    assert [(i, s, p, t) for i, s, p, _, t in parsed] == [(a, "ready", "5", "alpha  [acme]"), (b, "ready", "0", "beta")]
    assert lines[0].startswith(f"{a}  ready    p5   ")
    rows = json.loads(ok(cli("list", "--json")))
    assert [(r["id"], list(r)) for r in rows] == [(a, TASK_KEYS), (b, TASK_KEYS)]
    assert [r["id"] for r in json.loads(ok(cli("list", "--tenant", "acme", "--json")))] == [a]
    assert [r["id"] for r in json.loads(ok(cli("list", "--sort", "newest", "--json")))] == [b, a]
    assert [r["id"] for r in json.loads(ok(cli("list", "--search", "BET", "--json")))] == [b]
    assert [r["id"] for r in json.loads(ok(cli("list", "--limit", "1", "--json")))] == [a]
    ok(cli("archive", b))
    assert [r["id"] for r in json.loads(ok(cli("list", "--json")))] == [a]
    assert [r["id"] for r in json.loads(ok(cli("list", "--all", "--json")))] == [a, b]
    assert [r["id"] for r in json.loads(ok(cli("list", "--status", "archived", "--json")))] == [b]


def test_list_children_of_a_parent(cli: Cli) -> None:
    p = ok(cli("create", "p")).strip()
    c = ok(cli("create", "c", "--parent", p)).strip()
    ok(cli("create", "unrelated"))
    assert [r["id"] for r in json.loads(ok(cli("list", "--parent", p, "--json")))] == [c]


# -- show --------------------------------------------------------------------------------------------------------------
def test_show_human_output_is_exact(cli: Cli) -> None:
    p = ok(cli("create", "parent")).strip()
    t = ok(cli("create", "child", "--parent", p, "--body", "line one\nline two", "--command", "python w.py",
               "--max-runtime", "90s", "--tenant", "acme")).strip()
    ok(cli("comment", t, "first note", "--author", "ana"))
    d = json.loads(ok(cli("show", t, "--json")))
    created = d["created_at"]
    (c,) = d["comments"]
    ev = d["events"]
    out = ok(cli("show", t))
    expected = [
        f"{t}  child",
        "  status todo   priority 0   attempts 0/4   tenant acme",
        f"  created {created} (0s ago)   updated {d['updated_at']}",
        "  command python w.py",
        "  max runtime 90s",
        "",
        "  line one",
        "  line two",
        "",
        "parents:",
        f"  {p}  ready    parent",
        "",
        "comments:",
        f"  {c['created_at']} ana: first note",
        "",
        "events:",
        *(f"  {e['id']:>6} {e['created_at']} {e['kind']}" for e in ev),
    ]
    got = out.splitlines()
    got[2] = re.sub(r"\(\d+s ago\)", "(0s ago)", got[2])
    assert got == expected


def test_show_json_has_runs_comments_events(cli: Cli) -> None:
    t = ok(cli("create", "t")).strip()
    claim = json.loads(ok(cli("claim", t, "--worker", "w1", "--json")))
    ok(cli("complete", t, "--run-id", str(claim["run_id"]), "--summary", "all good"))
    d = json.loads(ok(cli("show", t, "--json")))
    assert list(d) == [*TASK_KEYS, "parents", "children", "runs", "comments", "events", "task", "latest_summary"]
    (run,) = d["runs"]
    assert {k: run[k] for k in ("id", "task_id", "worker", "outcome", "summary")} == {
        "id": claim["run_id"], "task_id": t, "worker": "w1", "outcome": "completed", "summary": "all good"}
    assert [e["kind"] for e in d["events"]] == ["created", "claimed", "completed"]
    assert [e["kind"] for e in json.loads(ok(cli("show", t, "--events", "1", "--json")))["events"]] == ["completed"]


# -- claim, heartbeat, complete, block: the fencing contract -----------------------------------------------------------
def test_claim_json_prints_task_run_and_lease(cli: Cli) -> None:
    t = ok(cli("create", "t")).strip()
    d = json.loads(ok(cli("claim", t, "--ttl", "5m", "--json")))
    assert list(d) == ["task_id", "run_id", "lease_expires_at", "attempt"]
    assert (d["task_id"], d["attempt"]) == (t, 1)
    assert isinstance(d["run_id"], int) and ISO.match(d["lease_expires_at"])


def test_claim_human_and_next_ready(cli: Cli) -> None:
    ok(cli("create", "low"))
    high = ok(cli("create", "high", "--priority", "9")).strip()
    out = ok(cli("claim"))
    m = re.fullmatch(rf"{high} run (\d+) lease until (\S+)\n", out)
    assert m and ISO.match(m.group(2))


def test_a_second_claim_exits_3_and_changes_nothing(cli: Cli, home_dump) -> None:
    t = ok(cli("create", "t")).strip()
    d = json.loads(ok(cli("claim", t, "--json")))
    before = home_dump()
    r = cli("claim", t)
    fails(r, 3, f"task {t} is claimed by run {d['run_id']} until {d['lease_expires_at']} "
                f"(see: hermes kanban show {t})")
    r = cli("claim", t, "--json")
    assert r.code == 3 and r.json() == {"error": {"code": "already_claimed", "message": r.err[len("error: "):-1]}}
    assert home_dump() == before


@pytest.mark.parametrize("command", ["heartbeat", "complete", "block"])
@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_run_that_is_not_the_current_one_exits_3_and_changes_nothing(
    cli: Cli, home_dump, monkeypatch: pytest.MonkeyPatch, command: str, how: str
) -> None:
    t = ok(cli("create", "t")).strip()
    run = json.loads(ok(cli("claim", t, "--json")))["run_id"]
    stale = run + 7
    before = home_dump()
    if how == "option":
        r = cli(command, t, "--run-id", str(stale))
    else:
        monkeypatch.setenv("HERMES_KANBAN_TASK", t)
        monkeypatch.setenv("HERMES_KANBAN_RUN_ID", str(stale))
        r = cli(command)
    fails(r, 3, f"run {stale} is not the current run of task {t} (run {run}); {command} refused, nothing changed")
    assert home_dump() == before


def test_worker_reports_from_the_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    t = ok(cli("create", "t")).strip()
    run = json.loads(ok(cli("claim", t, "--json")))["run_id"]
    monkeypatch.setenv("HERMES_KANBAN_TASK", t)
    monkeypatch.setenv("HERMES_KANBAN_RUN_ID", str(run))
    hb = json.loads(ok(cli("heartbeat", "--ttl", "10m", "--json")))
    assert list(hb) == ["task_id", "run_id", "lease_expires_at"] and hb["run_id"] == run
    assert ok(cli("complete", "--summary", "done by worker")) == f"{t} done\n"
    assert ok(cli("complete")) == f"{t} done\n"  # repeating the same run's report is a no-op


def test_the_environment_run_is_not_presented_for_another_task(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = ok(cli("create", "mine")).strip()
    other = ok(cli("create", "other")).strip()
    run = json.loads(ok(cli("claim", mine, "--json")))["run_id"]
    ok(cli("claim", other))
    monkeypatch.setenv("HERMES_KANBAN_TASK", mine)
    monkeypatch.setenv("HERMES_KANBAN_RUN_ID", str(run))
    other_run = run + 1
    fails(cli("complete", other), 3,
          f"task {other} is claimed by run {other_run}; workers pass --run-id (or HERMES_KANBAN_RUN_ID); to override "
          "the live claim use --force")


def test_complete_json_and_force(cli: Cli) -> None:
    t = ok(cli("create", "t")).strip()
    ok(cli("claim", t))
    d = json.loads(ok(cli("complete", t, "--force", "--summary", "by hand", "--json")))
    assert list(d) == [*TASK_KEYS, "spooled"]
    assert (d["status"], d["summary"], d["spooled"], d["current_run_id"]) == ("done", "by hand", False, None)


def test_block_unblock(cli: Cli) -> None:
    t = ok(cli("create", "t")).strip()
    assert ok(cli("block", t, "needs an API key")) == f"{t} blocked\n"
    d = json.loads(ok(cli("show", t, "--json")))
    assert d["events"][-1]["payload"]["reason"] == "needs an API key"
    assert ok(cli("unblock", t, "--reason", "key added")) == f"{t} ready\n"
    assert json.loads(ok(cli("block", t, "--json")))["status"] == "blocked"
    assert json.loads(ok(cli("unblock", t, "--json")))["status"] == "ready"


def test_heartbeat_needs_a_run(cli: Cli) -> None:
    t = ok(cli("create", "t")).strip()
    fails(cli("heartbeat", t), 1, f"heartbeat needs --run-id (or HERMES_KANBAN_RUN_ID) for task {t}")


# -- review gate -------------------------------------------------------------------------------------------------------
def test_review_gate(cli: Cli) -> None:
    t = ok(cli("create", "t", "--review")).strip()
    run = json.loads(ok(cli("claim", t, "--json")))["run_id"]
    assert ok(cli("complete", t, "--run-id", str(run))) == f"{t} review\n"
    assert ok(cli("request-changes", t, "add a test for the empty case")) == f"{t} ready\n"
    d = json.loads(ok(cli("show", t, "--json")))
    assert [(c["author"], c["body"]) for c in d["comments"]] == [("review", "add a test for the empty case")]
    run = json.loads(ok(cli("claim", t, "--json")))["run_id"]
    r = json.loads(ok(cli("request-review", t, "--run-id", str(run), "--summary", "ready for a look", "--json")))
    assert (r["status"], r["summary"]) == ("review", "ready for a look")
    assert ok(cli("approve", t, "--summary", "ship it")) == f"{t} done\n"
    assert json.loads(ok(cli("show", t, "--json")))["summary"] == "ship it"


def test_approve_and_request_changes_json(cli: Cli) -> None:
    t = ok(cli("create", "t")).strip()
    ok(cli("request-review", t))
    assert json.loads(ok(cli("request-changes", t, "nope", "--json")))["status"] == "ready"
    ok(cli("request-review", t))
    assert json.loads(ok(cli("approve", t, "--json")))["status"] == "done"


# -- comment, link, unlink, archive ------------------------------------------------------------------------------------
def test_comment(cli: Cli) -> None:
    t = ok(cli("create", "t")).strip()
    assert ok(cli("comment", t, "the flaky test is fixed upstream", "--author", "ana")) == f"comment 1 on {t}\n"
    d = json.loads(ok(cli("comment", t, "again", "--json")))
    assert list(d) == ["id", "task_id", "author", "body", "created_at"]
    assert (d["id"], d["task_id"], d["author"], d["body"]) == (2, t, None, "again")


def test_link_unlink(cli: Cli) -> None:
    p = ok(cli("create", "p")).strip()
    c = ok(cli("create", "c")).strip()
    assert ok(cli("link", p, c)) == f"{p} -> {c} (todo)\n"
    assert ok(cli("unlink", p, c)) == f"unlinked {p} -> {c} (ready)\n"
    assert json.loads(ok(cli("link", p, c, "--json")))["status"] == "todo"
    assert json.loads(ok(cli("unlink", p, c, "--json")))["status"] == "ready"
    ok(cli("link", p, c))
    fails(cli("link", c, p), 1, f"linking {c} -> {p} would create a cycle ({p} is an ancestor)")


def test_archive(cli: Cli) -> None:
    t = ok(cli("create", "t")).strip()
    assert ok(cli("archive", t)) == f"{t} archived\n"
    fails(cli("archive", t), 1, f"task {t} is already archived")
    t2 = ok(cli("create", "t2")).strip()
    assert json.loads(ok(cli("archive", t2, "--json")))["status"] == "archived"


# -- stats, events, init, boards ---------------------------------------------------------------------------------------
def test_stats(cli: Cli) -> None:
    t = ok(cli("create", "t")).strip()
    ok(cli("create", "u"))
    ok(cli("complete", t))
    assert ok(cli("stats")) == (
        "board default: 2 tasks\n"
        "  todo 0  ready 1  running 0  review 0  blocked 0  done 1  archived 0\n"
        "  run outcomes: none\n"
        "  open runs 0   expired leases 0   done in the last hour 1\n"
    )
    d = json.loads(ok(cli("stats", "--json")))
    assert list(d) == ["board", "total", "by_status", "run_outcomes", "open_runs", "expired_leases",
                       "done_last_hour", "oldest_ready_age_s", "last_event_id", "by_assignee"]
    assert (d["total"], d["by_status"]["done"], d["last_event_id"]) == (2, 1, 3)


def test_events(cli: Cli) -> None:
    assert ok(cli("events")) == "no events\n"
    t = ok(cli("create", "t", "--priority", "2")).strip()
    ok(cli("comment", t, "hi", "--author", "ana"))
    ok(cli("complete", t))
    evs = json.loads(ok(cli("events", "--json")))
    assert [(e["id"], e["kind"], e["task_id"]) for e in evs] == [(1, "created", t), (2, "commented", t),
                                                                  (3, "completed", t)]
    assert list(evs[0]) == ["id", "task_id", "run_id", "kind", "payload", "created_at"]
    lines = ok(cli("events", "--after", "1", "--kinds", "commented,completed")).splitlines()
    assert lines == [
        f"     2 {evs[1]['created_at']} commented        {t} comment_id=1 author=ana",
        f"     3 {evs[2]['created_at']} completed        {t} title=t",
    ]
    assert [e["id"] for e in json.loads(ok(cli("events", "--task", t, "--limit", "1", "--json")))] == [1]


@pytest.mark.sqlite_only  # the SQLite file path; tests/pg/test_pg_boards.py has the PostgreSQL output
def test_init(cli: Cli, hermes_home: Path) -> None:
    db = hermes_home / "kanban" / "boards" / "default" / "kanban.db"
    assert ok(cli("init")) == f"board default ready at {db}\n"
    assert json.loads(ok(cli("init", "--json"))) == {"board": "default", "db": str(db), "tasks": 0}


@pytest.mark.sqlite_only  # the SQLite file paths; tests/pg/test_pg_boards.py has the PostgreSQL boards
def test_boards(cli: Cli, hermes_home: Path) -> None:
    root = hermes_home / "kanban" / "boards"
    assert ok(cli("boards", "list")) == "no boards (see: hermes kanban boards create SLUG)\n"
    assert ok(cli("boards", "create", "research")) == f"board research created at {root}/research/kanban.db\n"
    assert json.loads(ok(cli("boards", "create", "research", "--json"))) == {
        "slug": "research", "db": f"{root}/research/kanban.db", "created": False}
    assert ok(cli("boards", "list")) == "research\n"
    assert json.loads(ok(cli("boards", "list", "--json"))) == [{"slug": "research", "db": f"{root}/research/kanban.db",
                                                            "name": None, "description": None, "current": False}]
    t = ok(cli("--board", "research", "create", "on research")).strip()
    assert [r["id"] for r in json.loads(ok(cli("list", "--board", "research", "--json")))] == [t]
    assert json.loads(ok(cli("list", "--json"))) == []  # the default board is another board
    out = ok(cli("boards", "rm", "research"))
    m = re.fullmatch(rf"board research moved to ({root}/_archived/research-\d{{8}}T\d{{6}}-[0-9a-f]{{6}})\n", out)
    assert m and Path(m.group(1), "kanban.db").exists()
    ok(cli("boards", "create", "scratch"))
    assert json.loads(ok(cli("boards", "rm", "scratch", "--delete", "--json"))) == {
        "slug": "scratch", "deleted": True, "archived_to": None}
    assert not (root / "scratch").exists()
    fails(cli("boards", "rm", "scratch"), 1, "board scratch does not exist (see: hermes kanban boards list)")


@pytest.mark.sqlite_only  # processes holding the SQLite file; tests/pg: rm --drop-schema refused while connected
def test_boards_rm_refuses_a_board_in_use(cli: Cli) -> None:
    ok(cli("boards", "create", "busy"))
    with Board.open("busy") as b:
        b.create_task("x")
        r = cli("boards", "rm", "busy")
        assert (r.code, r.err) == (3, f"error: board {b.paths.db} is open in another process (a dispatcher, worker, "
                                      "TUI or CLI call); stop it first\n")
        assert b.paths.db.exists()


@pytest.mark.sqlite_only  # the SQLite open-lock
def test_boards_rm_refuses_a_board_open_in_another_process(cli: Cli, tmp_path) -> None:
    """The open-lock is held by every connection in every process, so `rm` cannot move files under a live one."""
    import subprocess
    import sys

    ok(cli("boards", "create", "other"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hermes_cli.kanban import Board; b = Board.open('other'); "
         "print('open', flush=True); sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        r = cli("boards", "rm", "other")
        assert r.code == 3 and "is open in another process" in r.err
    finally:
        holder.communicate("")
    ok(cli("boards", "rm", "other", "--delete"))


def test_boards_rm_twice_in_one_second_archives_both(cli: Cli, hermes_home) -> None:
    for _ in range(2):
        ok(cli("boards", "create", "again"))
        ok(cli("boards", "rm", "again"))
    assert len(list((hermes_home / "kanban" / "boards" / "_archived").glob("again-*"))) == 2


def test_help_of_every_command_has_an_example(cli: Cli) -> None:
    from hermes_cli.cli import kanban

    for name in kanban.commands:
        r = cli(name, "--help")
        assert r.code == 0 and "Example:" in r.out and f"hermes kanban {name}" in r.out, name


def test_version() -> None:
    r = invoke(["--version"])
    assert r.code == 0 and re.fullmatch(r"hermes, version \S+\n", r.out)
