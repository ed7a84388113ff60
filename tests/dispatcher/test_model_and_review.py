"""hermes-agent's `set-model ID MODEL|none [--provider P]` (and `create --model/--provider`): the override reaches
the task's next worker as HERMES_KANBAN_MODEL / HERMES_KANBAN_PROVIDER; and `request-review --metadata --reviewer`.
Real CLI processes and a real dispatcher pass."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hermes_cli.kanban import Board, TaskStatus

from .conftest import HERMES, configure, pycmd

#: a worker that writes its model and provider into the file named by argv[1]
MODEL = ("import json,os,sys\nopen(sys.argv[1],'w').write(json.dumps([os.environ.get('HERMES_KANBAN_MODEL'),"
         "os.environ.get('HERMES_KANBAN_PROVIDER')]))")


def hermes(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERMES, "kanban", *args], capture_output=True, text=True, timeout=60)


def run_once(board: Board, task_id: str, out: Path) -> list[str | None]:
    p = hermes("dispatch", "--once", "--json")
    assert p.returncode == 0, p.stderr
    assert board.get_task(task_id).status == TaskStatus.DONE
    got: list[str | None] = json.loads(out.read_text())
    return got


def test_set_model_reaches_the_next_worker_and_none_clears_it(board: Board, tmp_path: Path) -> None:
    configure(board, backup_interval="off")
    out = tmp_path / "model.json"
    t = hermes("create", "hard refactor", "--command", pycmd(MODEL, str(out)), "--model", "m-small").stdout.strip()
    p = hermes("set-model", t, "claude-opus-4.6", "--provider", "anthropic", "--json")
    assert p.returncode == 0, p.stderr
    assert {k: json.loads(p.stdout)[k] for k in ("id", "model", "provider")} == {
        "id": t, "model": "claude-opus-4.6", "provider": "anthropic"}
    ctx = json.loads(hermes("context", t, "--json").stdout)["environment"]
    assert (ctx["HERMES_KANBAN_MODEL"], ctx["HERMES_KANBAN_PROVIDER"]) == ("claude-opus-4.6", "anthropic")
    assert run_once(board, t, out) == ["claude-opus-4.6", "anthropic"]

    again = hermes("create", "again", "--command", pycmd(MODEL, str(out)), "--model", "m-small").stdout.strip()
    assert hermes("set-model", again, "none").returncode == 0
    assert run_once(board, again, out) == [None, None]
    kinds = [e.kind for e in board.events(task_id=again)]
    assert kinds.count("model_override_set") == 2  # create --model, then the clearing


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["set-model", "t_000000000000", "m"], 1, "error: task t_000000000000 not found (see: hermes kanban list)"),
        (["set-model", "@", "--provider", "p"], 1,
         "error: --provider needs a model: hermes kanban set-model ID MODEL --provider P"),
        (["request-review", "@", "--metadata", "[1]"], 1,
         "error: invalid --metadata: it must be a JSON object, e.g. '{\"tests_run\": 12}'"),
        (["request-review", "@", "--reviewer", "bad name"], 1,
         "error: invalid reviewer 'bad name': a profile name is 1-64 letters, digits or ._@:+- (starting with a "
         "letter or digit), e.g. researcher"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(board: Board, args: list[str], code: int, error: str) -> None:
    t, _ = board.create_task("t")
    before = board.last_event_id()
    p = hermes(*[t.id if a == "@" else a for a in args])
    assert (p.returncode, p.stderr) == (code, error + "\n")
    assert board.last_event_id() == before


def test_request_review_keeps_metadata_on_the_run_and_names_the_reviewer(board: Board) -> None:
    t, _ = board.create_task("t")
    claim = board.claim(t.id, worker="w")
    assert claim is not None
    p = subprocess.run([HERMES, "kanban", "request-review", "--summary", "ready for a look", "--metadata",
                        '{"tests_run": 3}', "--reviewer", "reviewer", "--json"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "HERMES_KANBAN_TASK": t.id,
                                        "HERMES_KANBAN_RUN_ID": str(claim.run_id)})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "review"
    run = board.detail(t.id, events=0).runs[-1]
    assert run.id == claim.run_id and run.metadata == {"tests_run": 3} and run.summary == "ready for a look"
    event = board.events(task_id=t.id, kinds=["review_requested"])[-1]
    assert event.payload["reviewer"] == "reviewer" and event.payload["metadata"] == {"tests_run": 3}
