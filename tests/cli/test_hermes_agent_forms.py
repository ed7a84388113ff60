"""hermes-agent's forms of `create --scheduled-at` and `notify-subscribe|notify-unsubscribe TASK --platform P --chat-id
C [...]` (website/docs/user-guide/features/kanban.md: "Scheduled task starts", "Gateway notifications"), run through
the real CLI on a real board."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hermes_cli.kanban import Board, TaskStatus

HERMES = str(Path(sys.executable).with_name("hermes"))


def hermes(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERMES, "kanban", *args], capture_output=True, text=True, timeout=60)


def test_a_task_scheduled_in_the_future_is_not_claimed_or_dispatched_before_its_time(board: Board) -> None:
    p = hermes("create", "nightly backup audit", "--assignee", "ops", "--command", "true", "--scheduled-at",
               "2999-06-01T03:00:00Z", "--json")
    assert p.returncode == 0, p.stderr
    task = json.loads(p.stdout)
    assert task["status"] == "ready"
    assert task["retry_at"] == "2999-06-01T03:00:00.000Z"
    assert hermes("claim").returncode == 1  # nothing claimable before then
    p = hermes("claim", task["id"])
    assert (p.returncode, p.stderr) == (1, f"error: task {task['id']} is scheduled to start at "
                                           "2999-06-01T03:00:00.000Z; wait for it, or create it again without "
                                           "--scheduled-at\n")
    now, _ = board.create_task("unscheduled", command="true")
    p = hermes("dispatch", "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    assert [w["task_id"] for w in json.loads(p.stdout)["would_start"]] == [now.id]
    assert board.get_task(task["id"]).status == TaskStatus.READY
    assert "scheduled to start at 2999-06-01T03:00:00.000Z" in hermes("show", task["id"]).stdout


def test_a_scheduled_time_that_has_passed_is_claimable_and_offsets_are_honoured(board: Board) -> None:
    p = hermes("create", "later", "--scheduled-at", "2999-01-01T05:00:00+02:00", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["retry_at"] == "2999-01-01T03:00:00.000Z"
    p = hermes("create", "past", "--scheduled-at", "2020-01-01T05:00:00+02:00", "--json")
    assert p.returncode == 0, p.stderr
    past = json.loads(p.stdout)
    assert past["retry_at"] is None
    p = hermes("claim", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["task_id"] == past["id"]


def test_a_bad_scheduled_at_is_refused_and_creates_nothing(board: Board) -> None:
    before = board.last_event_id()
    p = hermes("create", "x", "--scheduled-at", "tomorrow")
    assert (p.returncode, p.stderr) == (1, "error: invalid --scheduled-at 'tomorrow': use an ISO 8601 time such as "
                                           "2026-06-01T03:00:00Z\n")
    assert board.last_event_id() == before


def test_notify_subscribe_with_a_platform_subscribes_the_chat_to_the_tasks_events(board: Board) -> None:
    t, _ = board.create_task("t")
    p = hermes("notify-subscribe", t.id, "--platform", "telegram", "--chat-id", "12345678", "--thread-id", "7",
               "--chat-type", "group", "--delivery-mode", "notify+wake", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    name = f"telegram:12345678:7:{t.id}"
    assert (out["name"], out["task_id"], out["platform"], out["chat_id"], out["thread_id"]) == (
        name, t.id, "telegram", "12345678", "7")
    assert out["kinds"] == ["completed", "blocked", "gave_up", "crashed", "timed_out"]
    assert f"events --follow --subscription {name} --task {t.id}" in p.stderr
    assert [s["name"] for s in json.loads(hermes("notify-list", t.id, "--json").stdout)] == [name]
    p = hermes("notify-unsubscribe", t.id, "--platform", "telegram", "--chat-id", "12345678", "--thread-id", "7",
               "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["removed"] is True
    assert json.loads(hermes("notify-list", "--json").stdout) == []


def test_notify_subscribe_platform_form_refuses_bad_input(board: Board) -> None:
    t, _ = board.create_task("t")
    p = hermes("notify-subscribe", "t_00000000", "--platform", "telegram", "--chat-id", "1")
    assert p.returncode == 1 and p.stderr.startswith("error: task t_00000000 not found")
    p = hermes("notify-subscribe", t.id, "--platform", "telegram")
    assert (p.returncode, p.stderr) == (2, "error: --platform needs --chat-id: hermes kanban notify-subscribe "
                                           "TASK_ID --platform P --chat-id C\n")
    p = hermes("notify-subscribe", "pager", "--chat-id", "1")
    assert (p.returncode, p.stderr) == (2, "error: --chat-id, --thread-id, --user-id, --user-id-alt, --chat-type, "
                                           "--notifier-profile and --delivery-mode only apply with --platform\n")
    p = hermes("notify-unsubscribe", t.id, "--platform", "telegram", "--chat-id", "1")
    assert p.returncode == 1 and "subscription telegram:1:" in p.stderr
    assert json.loads(hermes("notify-list", "--json").stdout) == []
