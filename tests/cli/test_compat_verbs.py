"""The cheap missing pieces of hermes-agent's vocabulary (issue 11, tests/compat): what each does here, exactly."""

from __future__ import annotations

import json
import os

import pytest

from .conftest import Cli


def ok(r) -> str:  # type: ignore[no-untyped-def]
    assert r.code == 0, r
    return str(r.out)


def new(cli: Cli, *args: str) -> str:
    return ok(cli("create", *args)).strip()


def test_list_mine_without_hermes_profile_falls_back_to_the_login_name(cli: Cli,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    monkeypatch.delenv("HERMES_PROFILE", raising=False)
    monkeypatch.setenv("LOGNAME", "ana")
    mine = new(cli, "mine", "--assignee", "ana")
    new(cli, "theirs", "--assignee", "bo")
    assert [t["id"] for t in json.loads(ok(cli("list", "--mine", "--json")))] == [mine]
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):  # none set (as under cron): the uid's name
        monkeypatch.delenv(name, raising=False)
    me = pwd.getpwuid(os.getuid()).pw_name
    own = new(cli, "own", "--assignee", me)
    assert [t["id"] for t in json.loads(ok(cli("list", "--mine", "--json")))] == [own]


def test_log_of_a_task_that_never_ran_is_empty_not_an_error(cli: Cli) -> None:
    t = new(cli, "never ran")
    r = cli("log", t, "--tail", "4096")
    assert (r.code, r.out) == (0, "") and r.error_line == f"note: no log for task {t} yet: it has not run under a " \
        f"dispatcher (see: hermes kanban runs {t})"
    d = json.loads(ok(cli("log", t, "--json")))
    assert (d["task_id"], d["log"], d["exists"]) == (t, "", False)
    assert cli("log", "t_0123456789ab").code == 1  # an unknown task is still an error


def test_notify_list_takes_a_task_id(cli: Cli) -> None:
    t = new(cli, "x")
    ok(cli("notify-subscribe", "ops", "--kinds", "completed"))
    assert [s["name"] for s in json.loads(ok(cli("notify-list", t, "--json")))] == ["ops"]
    assert cli("notify-list", "t_0123456789ab").code == 1


def test_reopen_review_sends_a_task_in_review_back(cli: Cli) -> None:
    t = new(cli, "x", "--review")
    ok(cli("complete", t))
    d = json.loads(ok(cli("reopen-review", t, "--reason", "needs another pass", "--json")))
    assert d["status"] == "ready"
    comments = json.loads(ok(cli("show", t, "--json")))["comments"]
    assert [c["body"] for c in comments] == ["needs another pass"]
    assert cli("reopen-review", t).code == 1  # not in review any more: refused, nothing changes


def test_schedule_parks_the_task_until_unblocked(cli: Cli) -> None:
    t = new(cli, "x")
    assert ok(cli("schedule", t, "waiting", "for", "the", "window")).strip() == f"{t} blocked"
    d = json.loads(ok(cli("show", t, "--json")))
    assert d["status"] == "blocked" and any(e["kind"] == "blocked" for e in d["events"])
    assert ok(cli("unblock", t)).strip() == f"{t} ready"


def test_create_keeps_the_model_and_notes_that_goal_is_not_used(cli: Cli) -> None:
    r = cli("create", "hard refactor", "--assignee", "coder", "--model", "claude-opus-4.6", "--provider", "anthropic",
            "--goal", "--json")
    assert r.code == 0 and json.loads(r.out)["assignee"] == "coder"
    assert r.err.count("note: ") == 1 and "note: --goal not used here" in r.err
    # the model override is kept for the worker (set-model's, since issue 11)
    env = json.loads(cli("context", json.loads(r.out)["id"], "--json").out)["environment"]
    assert (env["HERMES_KANBAN_MODEL"], env["HERMES_KANBAN_PROVIDER"]) == ("claude-opus-4.6", "anthropic")
