"""The command lines hermes-agent users type, against ours: assignees, reports with results, several ids, views,
lifecycle verbs and boards. Exact output where it is ours to define; every refusal changes nothing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from hermes_cli.kanban import Board

from .conftest import HERMES, Cli

NO_SUCH = "t_0123456789ab"


def ok(r) -> str:  # type: ignore[no-untyped-def]
    assert (r.code, r.err) == (0, ""), r
    return str(r.out)


def new(cli: Cli, *args: str) -> str:
    return ok(cli("create", *args)).strip()


# -- assignees ---------------------------------------------------------------------------------------------------------
def test_create_json_carries_task_id_assignee_and_creator(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    d = json.loads(ok(cli("create", "research", "--assignee", "researcher", "--created-by", "ana", "--skill", "web",
                          "--skill", "pdf", "--json")))
    assert d["task_id"] == d["id"] and (d["assignee"], d["created_by"], d["skills"]) == ("researcher", "ana",
                                                                                     ["web", "pdf"])
    monkeypatch.setenv("HERMES_PROFILE", "orchestrator")
    assert json.loads(ok(cli("create", "x", "--json")))["created_by"] == "orchestrator"
    items = json.loads(ok(cli("list", "--json")))
    assert all({"created_by", "assignee", "task_id"} - set(i) == {"task_id"} for i in items)


def test_list_by_assignee_mine_and_ls(cli: Cli, monkeypatch: pytest.MonkeyPatch, home_dump) -> None:  # type: ignore[no-untyped-def]
    a = new(cli, "research", "--assignee", "researcher")
    b = new(cli, "write", "--assignee", "writer")
    assert [t["id"] for t in json.loads(ok(cli("list", "--assignee", "writer", "--json")))] == [b]
    assert ok(cli("ls", "--assignee", "researcher")).endswith("research  @researcher\n")
    monkeypatch.delenv("HERMES_PROFILE", raising=False)
    monkeypatch.setenv("USER", "writer")  # the login-name fallback is tested in test_compat_verbs.py
    r = cli("list", "--mine", "--assignee", "researcher")
    assert (r.code, r.err) == (2, "error: --mine is writer (your login name) and --assignee is researcher: give one "
                                  "of them\n")
    monkeypatch.setenv("HERMES_PROFILE", "researcher")
    assert [t["id"] for t in json.loads(ok(cli("list", "--mine", "--json")))] == [a]
    assert json.loads(ok(cli("list", "--sort", "assignee", "--json")))[0]["id"] == a  # hermes-agent's sort names


def test_assign_reassign_reclaim_and_assignees(cli: Cli, home_dump) -> None:  # type: ignore[no-untyped-def]
    t = new(cli, "research", "--assignee", "researcher")
    assert ok(cli("assign", t, "none")) == f"{t} assigned to (nobody)\n"
    assert ok(cli("assign", t, "researcher")) == f"{t} assigned to researcher\n"
    run = json.loads(ok(cli("claim", t, "--json")))["run_id"]
    before = home_dump()
    r = cli("reassign", t, "writer")
    assert (r.code, r.err) == (3, f"error: task {t} is running (run {run}); to move it to writer free it first: "
                                  f"hermes kanban reassign {t} writer --reclaim\n")
    assert home_dump() == before
    d = json.loads(ok(cli("reassign", t, "writer", "--reclaim", "--reason", "stuck", "--json")))
    assert (d["assignee"], d["status"]) == ("writer", "ready")
    r = cli("complete", t, "--run-id", str(run))  # the old worker is fenced off
    assert r.code == 3 and "complete refused, nothing changed" in r.err
    assert json.loads(ok(cli("assignees", "--json"))) == [{"name": "writer", "counts": {"ready": 1}, "total": 1}]
    assert ok(cli("assignees")) == "writer                  1  ready 1\n"
    run2 = json.loads(ok(cli("claim", t, "--json")))["run_id"]
    assert ok(cli("reclaim", t, "--reason", "wedged")) == f"{t} ready\n"
    runs = json.loads(ok(cli("runs", t, "--json")))
    assert [(x["id"], x["outcome"], x["summary"]) for x in runs] == [(run, "reclaimed", "stuck"),
                                                                    (run2, "reclaimed", "wedged")]


# -- reports -----------------------------------------------------------------------------------------------------------
def test_worker_completes_with_result_and_metadata_seen_by_show_runs_and_the_child(
        cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    p = new(cli, "research")
    c = new(cli, "write", "--parent", p)
    run = json.loads(ok(cli("claim", p, "--json")))["run_id"]
    monkeypatch.setenv("HERMES_KANBAN_TASK", p)
    monkeypatch.setenv("HERMES_KANBAN_RUN_ID", str(run))
    hb = json.loads(ok(cli("heartbeat", "--note", "half way", "--json")))
    assert hb["note"] == "half way"
    d = json.loads(ok(cli("complete", "--result", "3 sources", "--metadata", '{"sources": 3}', "--json")))
    assert (d["status"], d["result"], d["spooled"]) == ("done", "3 sources", False)
    monkeypatch.delenv("HERMES_KANBAN_TASK")
    monkeypatch.delenv("HERMES_KANBAN_RUN_ID")
    show = json.loads(ok(cli("show", p, "--json")))
    assert (show["runs"][0]["result"], show["runs"][0]["metadata"]) == ("3 sources", {"sources": 3})
    assert "        metadata: {\"sources\": 3}" in ok(cli("show", p))
    ctx = json.loads(ok(cli("context", c, "--json")))
    assert ctx["parents"][0]["result"] == "3 sources" and ctx["parents"][0]["metadata"] == {"sources": 3}
    text = ok(cli("context", c))
    assert f"- {p} research (done)\n  result: 3 sources\n  metadata: {{\"sources\": 3}}\n" in text
    assert f"HERMES_KANBAN_TASK={c}\n" in text
    assert [e["payload"] for e in json.loads(ok(cli("events", "--task", p, "--kinds", "heartbeat", "--json")))] == [
        {"note": "half way"}]


def test_complete_several_ids_all_or_none(cli: Cli, home_dump) -> None:  # type: ignore[no-untyped-def]
    a, b = new(cli, "a"), new(cli, "b")
    done = new(cli, "c")
    ok(cli("complete", done))
    before = home_dump()
    r = cli("complete", a, b, done)
    assert (r.code, r.err) == (1, f"error: cannot complete task {done}: it is already done\n")
    r = cli("complete", a, b, "--summary", "same")
    assert r.code == 2 and r.err.startswith("error: --summary, --metadata, --run-id and --next are per task")
    assert home_dump() == before
    out = json.loads(ok(cli("complete", a, b, "--result", "bulk", "--json")))
    assert [(x["id"], x["status"], x["result"]) for x in out] == [(a, "done", "bulk"), (b, "done", "bulk")]
    assert ok(cli("complete", new(cli, "d"), new(cli, "e"))).count(" done\n") == 2


def test_block_reason_words_more_ids_and_kinds(cli: Cli, home_dump) -> None:  # type: ignore[no-untyped-def]
    a, b, c = new(cli, "a"), new(cli, "b"), new(cli, "c")
    out = ok(cli("block", a, "waiting", "for", "the", "key", "--ids", b, c, "--kind", "capability"))
    assert out == f"{a} blocked\n{b} blocked\n{c} blocked\n"
    ev = json.loads(ok(cli("events", "--task", b, "--kinds", "blocked", "--json")))[0]["payload"]
    assert (ev["reason"], ev["block_kind"]) == ("waiting for the key", "capability")
    assert ok(cli("unblock", a, b, c)) == f"{a} ready\n{b} ready\n{c} ready\n"
    p = new(cli, "parent")
    child = new(cli, "child", "--parent", p)
    ok(cli("promote", child, "--force"))
    assert json.loads(ok(cli("block", child, "--kind", "dependency", "--json")))["status"] == "todo"
    before = home_dump()
    r = cli("block", a, "--kind", "someday")
    assert r.code == 2 and "Invalid value for '--kind'" in r.err
    r = cli("unblock", a, NO_SUCH)
    assert (r.code, r.err) == (1, f"error: cannot unblock task {a}: it is ready, not blocked\n")
    assert home_dump() == before


def test_archive_several_and_rm(cli: Cli, home_dump) -> None:  # type: ignore[no-untyped-def]
    a, b = new(cli, "a"), new(cli, "b")
    before = home_dump()
    r = cli("archive", "--rm", a)
    assert (r.code, r.err) == (1, f"error: cannot delete task {a}: it is ready; only archived tasks are deleted "
                                  f"(archive it first: hermes kanban archive {a})\n")
    assert cli("archive").code == 2
    assert home_dump() == before
    assert ok(cli("archive", a, b)) == f"{a} archived\n{b} archived\n"
    assert json.loads(ok(cli("archive", "--rm", a, b, "--json"))) == {"deleted": [a, b]}
    assert json.loads(ok(cli("list", "--all", "--json"))) == []


# -- lifecycle ---------------------------------------------------------------------------------------------------------
def test_triage_blocked_promote_and_edit(cli: Cli, home_dump) -> None:  # type: ignore[no-untyped-def]
    t = json.loads(ok(cli("create", "idea", "--triage", "--json")))
    assert t["status"] == "triage"
    g = json.loads(ok(cli("create", "gate", "--initial-status", "blocked", "--json")))
    assert (g["status"], g["block_kind"]) == ("blocked", "needs_input")
    before = home_dump()
    assert json.loads(ok(cli("promote", t["id"], "--dry-run", "--json"))) == {
        "task_id": t["id"], "promoted": True, "dry_run": True, "reason": None, "error": None, "status": "triage"}
    assert home_dump() == before
    bulk = json.loads(ok(cli("promote", t["id"], "looks", "good", "--ids", g["id"], "--json")))
    assert [(x["task_id"], x["status"], x["reason"]) for x in bulk] == [(t["id"], "ready", "looks good"),
                                                                       (g["id"], "ready", "looks good")]
    e = json.loads(ok(cli("edit", t["id"], "--title", "a better idea", "--priority", "9", "--json")))
    assert (e["title"], e["priority"]) == ("a better idea", 9)
    r = cli("edit", t["id"], "--result", "x")
    assert r.code == 1 and r.err.startswith(f"error: cannot set the result of task {t['id']}: it is ready")


# -- views -------------------------------------------------------------------------------------------------------------
def test_log_and_its_tail(cli: Cli, board: Board) -> None:
    t = new(cli, "t")
    r = cli("log", t)
    assert (r.code, r.out, r.err) == (0, "", f"note: no log for task {t} yet: it has not run under a dispatcher "
                                             f"(see: hermes kanban runs {t})\n")
    board.paths.logs_dir.mkdir(parents=True, exist_ok=True)
    (board.paths.logs_dir / f"{t}.log").write_bytes(b"first line\nsecond line\n")
    assert ok(cli("log", t)) == "first line\nsecond line\n"
    assert ok(cli("log", t, "--tail", "12")) == "second line\n"
    assert json.loads(ok(cli("log", t, "--tail", "5", "--json")))["log"] == "line\n"


def test_diagnostics_and_diag(cli: Cli) -> None:
    t = json.loads(ok(cli("create", "idea", "--triage", "--json")))["id"]
    assert ok(cli("diag")) == (f"warning  {t}  triage: parked in triage: nothing runs it until it is promoted\n"
                               f"         next: hermes kanban promote {t}\n")
    assert json.loads(ok(cli("diagnostics", "--severity", "error", "--json"))) == []
    d = json.loads(ok(cli("diagnostics", "--task", t, "--json")))
    assert [(x["kind"], x["next"]) for x in d] == [("triage", f"hermes kanban promote {t}")]


def test_gc(cli: Cli) -> None:
    d = json.loads(ok(cli("gc", "--event-retention-days", "7", "--log-retention-days", "14", "--json")))
    assert d == {"board": "default", "events_removed": 0, "logs_removed": 0, "kept_after_event": None}
    r = cli("gc", "--event-retention-days", "-1")
    assert (r.code, r.err) == (1, "error: invalid --event-retention-days -1.0: use a number of days from 0 to 36500\n")


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([HERMES, "kanban", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_tail_prints_a_tasks_events_then_follows_them(cli: Cli) -> None:
    t = new(cli, "t")
    other = new(cli, "other")
    p = _spawn("tail", t, "--limit", "3", "--timeout", "60", "--json")
    assert p.stdout is not None
    first = json.loads(p.stdout.readline())
    assert (first["kind"], first["task_id"]) == ("created", t)
    ok(cli("comment", other, "not this one"))
    ok(cli("comment", t, "this one"))
    ok(cli("complete", t))
    out, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (0, "")
    assert [(e["kind"], e["task_id"]) for e in map(json.loads, out.splitlines())] == [("commented", t),
                                                                                    ("completed", t)]


def test_watch_follows_the_board_filtered_by_assignee(cli: Cli) -> None:
    mine = new(cli, "mine", "--assignee", "researcher")
    theirs = new(cli, "theirs", "--assignee", "writer")
    p = _spawn("watch", "--assignee", "researcher", "--limit", "1", "--timeout", "60", "--json")
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        # the watcher starts at the newest event: keep writing until it has seen one of researcher's
        ok(cli("comment", theirs, "noise"))
        ok(cli("comment", mine, "signal"))
        time.sleep(0.2)
    out, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (0, "")
    (event,) = map(json.loads, out.splitlines())
    assert (event["kind"], event["task_id"]) == ("commented", mine)


# -- boards ------------------------------------------------------------------------------------------------------------
def test_boards_switch_show_rename_and_create_with_settings(cli: Cli, hermes_home: Path) -> None:
    assert ok(cli("boards")) == "no boards (see: hermes kanban boards create SLUG)\n"
    assert ok(cli("boards", "show")) == "default\n"
    out = ok(cli("boards", "create", "ops", "--name", "Operations", "--description", "on-call", "--switch",
                 "--default-workdir", str(hermes_home / "work")))
    assert out.endswith("now using board ops\n")
    assert json.loads(ok(cli("boards", "current", "--json")))["slug"] == "ops"
    t = new(cli, "on ops")  # no --board: the switched-to board
    assert [x["id"] for x in json.loads(ok(cli("--board", "ops", "list", "--json")))] == [t]
    assert ok(cli("boards", "rename", "ops", "Ops team")) == "board ops is now named Ops team\n"
    listed = json.loads(ok(cli("boards", "ls", "--json")))
    assert [(b["slug"], b["name"], b["current"]) for b in listed] == [("ops", "Ops team", True)]
    assert ok(cli("boards")) == "ops  Ops team  (current)\n"
    r = cli("boards", "use", "nope")
    assert (r.code, r.err) == (1, "error: board nope does not exist (see: hermes kanban boards create nope)\n")
    assert ok(cli("boards", "use", "default")) == "now using board default\n"
    assert json.loads(ok(cli("list", "--json"))) == []
    assert (hermes_home / "kanban" / "current").read_text() == "default\n"


# -- bad input ---------------------------------------------------------------------------------------------------------
BAD = [
    (["assign", NO_SUCH, "researcher"], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["assign", "{t}", "two words"], 1, "invalid assignee 'two words': a profile name is 1-64 letters, digits or "
                                       "._@:+- (starting with a letter or digit), e.g. researcher"),
    (["reclaim", "{t}"], 1, "cannot reclaim task {t}: it is ready, not running"),
    (["promote", "{t}"], 1, "cannot promote task {t}: it is ready; only todo, blocked or triage tasks can be "
                            "promoted"),
    (["edit", "{t}"], 1, "nothing to change: give --title, --body, --priority or --result"),
    (["edit", "{t}", "--summary", "s"], 1, "--summary and --metadata backfill a result: give --result too"),
    (["complete", "{t}", "--metadata", "[1]"], 1, "invalid --metadata: it must be a JSON object, e.g. "
                                                  "'{\"tests_run\": 12}'"),
    (["create", "x", "--triage", "--initial-status", "blocked"], 1,
     "use either --triage or --initial-status blocked, not both"),
    (["create", "x", "--assignee", "a b"], 1, "invalid assignee 'a b': a profile name is 1-64 letters, digits or "
                                              "._@:+- (starting with a letter or digit), e.g. researcher"),
    (["runs", NO_SUCH], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["context", NO_SUCH], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["tail", NO_SUCH, "--timeout", "1"], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["diagnostics", "--task", NO_SUCH], 1, f"task {NO_SUCH} not found (see: hermes kanban list)"),
    (["boards", "rename", "nope", "x"], 1, "board nope does not exist (see: hermes kanban boards list)"),
    (["archive", "{t}", "--rm", "{t}"], 2, "give either task ids to archive or --rm with archived task ids, not both"),
]


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
@pytest.mark.parametrize(("argv", "code", "message"), BAD, ids=[" ".join(c[0][:2]) for c in BAD])
def test_bad_input_changes_nothing(cli: Cli, home_dump, argv: list[str], code: int, message: str,  # type: ignore[no-untyped-def]
                                   as_json: bool) -> None:
    t = new(cli, "a ready task")
    argv = [a.replace("{t}", t) for a in argv] + (["--json"] if as_json else [])
    before = home_dump()
    r = cli(*argv)
    assert r.code == code, r
    assert r.error_line == "error: " + message.replace("{t}", t)
    if as_json:
        assert json.loads(r.out)["error"]["message"] == message.replace("{t}", t)
    else:
        assert r.out == ""
    assert home_dump() == before


@pytest.mark.parametrize("argv", [["specify", "--all", "--json"], ["decompose", "t_3fa2b1c4d5e6"],
                                  ["swarm", "goal", "--worker", "a:b", "--verifier", "v", "--synthesizer", "s"]])
def test_language_model_verbs_say_they_are_not_supported(cli: Cli, home_dump, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    new(cli, "a task")
    before = home_dump()
    r = cli(*argv)
    assert r.code == 2 and r.error_line.startswith(f"error: {argv[0]} is not supported here: ")
    assert r.error_line.endswith("(see: docs/coming-from-hermes-agent.md)")
    if "--json" in argv:
        assert json.loads(r.out)["error"]["code"] == "unsupported"
    assert home_dump() == before


def test_comment_and_request_changes_join_their_words(cli: Cli) -> None:
    t = new(cli, "t", "--review")
    assert json.loads(ok(cli("comment", t, "looks", "good", "--json")))["body"] == "looks good"
    ok(cli("complete", t))
    ok(cli("request-changes", t, "add", "a", "test"))
    assert json.loads(ok(cli("show", t, "--json")))["comments"][-1]["body"] == "add a test"


def test_removing_the_current_board_goes_back_to_default(cli: Cli, hermes_home: Path) -> None:
    ok(cli("boards", "create", "side", "--switch"))
    ok(cli("boards", "rm", "side"))
    assert ok(cli("boards", "show")) == "default\n"
    assert not (hermes_home / "kanban" / "current").exists()
    ok(cli("boards", "create", "gone", "--switch"))
    import os
    import shutil

    if os.environ.get("HERMES_KANBAN_URL"):  # a PostgreSQL board is its schema: drop it behind our back
        from hermes_cli.kanban.store.pg.database import schema_name

        with psycopg_connect(os.environ["HERMES_KANBAN_URL"]) as conn:
            conn.execute(f'DROP SCHEMA "{schema_name("gone")}" CASCADE')
    shutil.rmtree(hermes_home / "kanban" / "boards" / "gone")  # removed behind our back
    r = cli("list")
    assert (r.code, r.err) == (1, "error: board gone, chosen with boards switch, does not exist (see: hermes kanban "
                                  "boards switch default)\n")


def psycopg_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(url, autocommit=True)


def test_show_json_also_has_the_task_under_task(cli: Cli) -> None:
    t = new(cli, "t", "--assignee", "researcher")
    ok(cli("complete", t, "--summary", "done it"))
    d = json.loads(ok(cli("show", t, "--json")))
    assert (d["task"]["status"], d["task"]["assignee"], d["latest_summary"]) == ("done", "researcher", "done it")
    assert d["task"] == {k: v for k, v in d.items() if k in d["task"]}
