"""doctor tells the truth: a board whose ready tasks wait for pull workers (the README tour) is healthy; a task that
gave up is reported with the next command and makes the board need attention (exit 1); ready tasks that only a
dispatcher starts still warn when none runs. The TUI shows the same verdict (tests/tui/test_health.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hermes_cli.kanban import Board

from .conftest import Result, run_hermes


def finding(r: Result, check: str) -> dict[str, Any]:
    return next(f for f in r.json()["findings"] if f["check"] == check)


def doctor() -> Result:
    return run_hermes("kanban", "doctor", "--json")


def test_the_readme_tour_board_is_healthy(hermes_home: Path) -> None:
    """The README tour, command for command (the real console script): a pull worker claims the task, so neither the
    ready task nor the missing dispatcher is a problem; nor is a backup not yet taken on a board minutes old."""
    created = run_hermes("kanban", "create", "fetch the data", "--priority", "5", "--json")
    assert created.code == 0, created.err
    task = created.json()["id"]
    before = doctor()
    assert (before.code, before.err) == (0, ""), before.out + before.err
    assert before.json()["healthy"] is True and before.json()["level"] in ("ok", "info")
    waiting = finding(before, "dispatcher")
    assert waiting["level"] == "info" and waiting["data"] == {"ready": 1, "dispatchable": 0}, waiting
    assert "hermes kanban claim" in waiting["message"]
    assert finding(before, "backup")["level"] == "info"
    assert run_hermes("kanban", "list").code == 0
    claim = run_hermes("kanban", "claim", "--json").json()
    assert claim["task_id"] == task
    done = run_hermes("kanban", "complete", task, "--run-id", str(claim["run_id"]), "--summary", "fetched")
    assert done.code == 0, done.err
    assert run_hermes("kanban", "show", task).code == 0
    after = doctor()
    assert (after.code, after.err) == (0, ""), after.out + after.err
    human = run_hermes("kanban", "doctor")
    assert human.code == 0 and human.out.splitlines()[-1] == "healthy"


def test_a_task_that_gave_up_is_reported_and_needs_attention(board: Board) -> None:
    task = board.create_task("flaky job", max_retries=0)[0]
    claim = board.claim(task.id, worker="w")
    assert claim is not None
    board.finish_run(task.id, claim.run_id, "crashed", summary="segfault", exit_code=139)
    assert board.get_task(task.id).status == "blocked"
    r = doctor()
    assert r.code == 1, r.out + r.err
    gave_up = finding(r, "gave_up")
    assert gave_up["level"] == "warn"
    assert task.id in gave_up["message"] and "crashed" in gave_up["message"]
    assert gave_up["next"] == f"hermes kanban show {task.id}, then hermes kanban unblock {task.id} (retry it) or " \
                              f"hermes kanban archive {task.id}"
    assert gave_up["data"]["tasks"] == [{"id": task.id, "title": "flaky job", "attempts": 1,
                                         "last_outcome": "crashed"}]
    assert r.json()["error"]["code"] == "unhealthy"
    assert r.err == f"error: board default is unhealthy: gave_up: {gave_up['message']} (see: {gave_up['next']})\n"
    human = run_hermes("kanban", "doctor")
    assert human.code == 1 and human.out.splitlines()[-1] == "unhealthy (warn)"
    assert f"next: {gave_up['next']}" in human.out
    # once a person has dealt with it (unblocked: it is ready again for a pull worker), the board is healthy
    board.unblock(task.id)
    assert doctor().code == 0


def test_a_task_a_person_blocked_is_not_a_given_up_task(board: Board) -> None:
    """A deliberate block (a person, or a worker asking for help) is the board working as meant; a task blocked that
    way after an earlier give-up and retry is not reported either."""
    flaky = board.create_task("flaky", max_retries=0)[0]
    claim = board.claim(flaky.id, worker="w")
    assert claim is not None
    board.finish_run(flaky.id, claim.run_id, "timed_out")
    board.unblock(flaky.id)
    board.block(flaky.id, reason="waiting on legal")
    board.block(board.create_task("needs a human")[0].id, reason="credentials")
    r = doctor()
    assert r.code == 0, r.out + r.err
    assert finding(r, "gave_up")["level"] == "ok"


def test_ready_tasks_only_a_dispatcher_starts_still_warn_without_one(board: Board) -> None:
    board.create_task("pull me")
    board.create_task("build", command="true")
    r = doctor()
    assert r.code == 1, r.out + r.err
    waiting = finding(r, "dispatcher")
    assert waiting["level"] == "warn" and waiting["next"] == "hermes kanban dispatch"
    assert waiting["data"] == {"ready": 2, "dispatchable": 1}
    assert waiting["message"] == ("no dispatcher holds the board lease; 1 ready task(s) with a command wait "
                                  "(1 more without one wait for a pull worker)")


def test_a_default_command_makes_every_ready_task_wait_for_the_dispatcher(board: Board) -> None:
    board.create_task("pull me")
    board.paths.config_file.write_text('[dispatch]\ndefault_command = "python3 worker.py {task_id}"\n',
                                       encoding="utf-8")
    r = doctor()
    assert r.code == 1, r.out + r.err
    assert finding(r, "dispatcher")["data"] == {"ready": 1, "dispatchable": 1}


def test_no_backup_warns_once_the_board_is_older_than_the_backup_age_limit(board: Board) -> None:
    from hermes_cli.kanban.durability import doctor as health

    board.create_task("x")
    created = health.doctor(board.paths).findings
    [young] = [f for f in created if f.check == "backup"]
    assert young.level == "info" and young.next == "hermes kanban backup"
    later = health.doctor(board.paths, now=young.data["board_created_at"] + health.BACKUP_MAX_AGE_S + 60)
    [old] = [f for f in later.findings if f.check == "backup"]
    assert (old.level, old.message, old.next) == ("warn", "no verified backup", "hermes kanban backup")
