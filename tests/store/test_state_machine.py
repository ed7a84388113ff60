"""The task state machine through the public Board API: every (status, operation) pair, dependencies, priorities,
tenants, idempotency keys, the review gate, runs and fencing, retries. A refused change never changes the board."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hermes_cli.kanban import (
    AlreadyClaimed,
    Board,
    HermesError,
    InvalidTransition,
    InvalidValue,
    NotFound,
    StaleRun,
    Task,
    TaskStatus,
)
from hermes_cli.kanban.core.errors import CycleRefused

from .conftest import MakeTask

STATUSES = [str(s) for s in TaskStatus]

# What a person (no run id) can do from each status: the resulting status, or the error class.
OPS: dict[str, Callable[[Board, Task], Any]] = {
    "claim": lambda b, t: b.claim(t.id),
    "complete": lambda b, t: b.complete(t.id),
    "block": lambda b, t: b.block(t.id, reason="why"),
    "unblock": lambda b, t: b.unblock(t.id),
    "request_review": lambda b, t: b.request_review(t.id),
    "approve": lambda b, t: b.approve(t.id),
    "request_changes": lambda b, t: b.request_changes(t.id, reason="again"),
    "archive": lambda b, t: b.archive(t.id),
    "comment": lambda b, t: b.comment(t.id, "a note"),
}
IT, AC = InvalidTransition, AlreadyClaimed
EXPECTED: dict[str, dict[str, str | type[HermesError]]] = {
    #                  triage, todo      ready       running     review    blocked    done      archived
    "claim":          {"triage": IT,
                       "todo": IT, "ready": "running", "running": AC, "review": IT, "blocked": IT, "done": IT,
                       "archived": IT},
    "complete":       {"triage": IT,
                       "todo": IT, "ready": "done", "running": AC, "review": IT, "blocked": "done", "done": IT,
                       "archived": IT},
    "block":          {"triage": IT,
                       "todo": "blocked", "ready": "blocked", "running": AC, "review": IT, "blocked": IT, "done": IT,
                       "archived": IT},
    "unblock":        {"triage": IT,
                       "todo": IT, "ready": IT, "running": IT, "review": IT, "blocked": "ready", "done": IT,
                       "archived": IT},
    "request_review": {"triage": IT,
                       "todo": IT, "ready": "review", "running": AC, "review": IT, "blocked": "review", "done": IT,
                       "archived": IT},
    "approve":        {"triage": IT,
                       "todo": IT, "ready": IT, "running": IT, "review": "done", "blocked": IT, "done": IT,
                       "archived": IT},
    "request_changes": {"triage": IT,
                        "todo": IT, "ready": IT, "running": IT, "review": "ready", "blocked": IT, "done": IT,
                        "archived": IT},
    "archive":        {s: "archived" for s in STATUSES} | {"archived": IT},
    "comment":        {s: s for s in STATUSES},
}


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("op", list(OPS))
def test_transition_table(board: Board, make_task: MakeTask, dump, op: str, status: str) -> None:
    task = make_task(status)
    expected = EXPECTED[op][status]
    if isinstance(expected, str):
        OPS[op](board, task)
        assert board.get_task(task.id).status == expected
        assert board.db.value("SELECT kind FROM events ORDER BY id DESC LIMIT 1") is not None
    else:
        before = dump(board)
        with pytest.raises(expected) as err:
            OPS[op](board, task)
        assert type(err.value) is expected
        assert task.id in err.value.message
        assert dump(board) == before


def test_every_status_is_in_the_table() -> None:
    assert set(EXPECTED) == set(OPS)
    assert all(set(row) == set(STATUSES) for row in EXPECTED.values())


def test_error_messages_name_the_task_and_the_way_out(board: Board, make_task: MakeTask) -> None:
    review, done, todo, running = make_task("review"), make_task("done"), make_task("todo"), make_task("running")
    cases = [
        (lambda: board.complete(review.id), f"cannot complete task {review.id}: it is in review "
                                           f"(see: hermes kanban approve {review.id})"),
        (lambda: board.complete(done.id), f"cannot complete task {done.id}: it is already done"),
        (lambda: board.claim(todo.id), f"task {todo.id} is waiting on its parents (see: hermes kanban show {todo.id})"),
        (lambda: board.claim(done.id), f"task {done.id} is done; only ready tasks can be claimed"),
        (lambda: board.approve(done.id), f"cannot approve task {done.id}: it is done, not in review"),
        (lambda: board.unblock(done.id), f"cannot unblock task {done.id}: it is done, not blocked"),
        (lambda: board.complete(running.id),
         f"task {running.id} is claimed by run {running.current_run_id}; workers pass --run-id "
         "(or HERMES_KANBAN_RUN_ID); to override the live claim use --force"),
        (lambda: board.get_task("t_0123456789ab"), "task t_0123456789ab not found (see: hermes kanban list)"),
        (lambda: board.claim("nope"),
         "invalid task id 'nope': task ids look like t_3fa2b1c4d5e6 (see: hermes kanban list)"),
    ]
    for call, message in cases:
        with pytest.raises(HermesError) as err:
            call()
        assert err.value.message == message


# -- creating ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"title": ""}, 'task title is empty: give a short description, e.g. hermes kanban create "fix login"'),
        ({"title": "   "}, 'task title is empty: give a short description, e.g. hermes kanban create "fix login"'),
        ({"title": "a\nb"}, "task title contains control characters; put multi-line text in --body"),
        ({"title": "x" * 501}, "task title is 501 characters; the limit is 500 (put details in --body)"),
        ({"priority": 1001}, "invalid priority 1001: use an integer from -1000 to 1000"),
        ({"priority": -1001}, "invalid priority -1001: use an integer from -1000 to 1000"),
        ({"priority": "high"}, "invalid priority 'high': use an integer from -1000 to 1000"),
        ({"max_runtime": "soon"}, "invalid max-runtime 'soon': use a number with an optional unit, e.g. 90s, 30m, "
                                  "2h, 1d"),
        ({"max_runtime": "0s"}, "invalid max-runtime '0s': must be more than 0 and at most 365d"),
        ({"max_runtime": "400d"}, "invalid max-runtime '400d': must be more than 0 and at most 365d"),
        ({"max_retries": -1}, "invalid max-retries -1: use an integer from 0 to 100"),
        ({"max_retries": 101}, "invalid max-retries 101: use an integer from 0 to 100"),
        ({"tenant": " "}, "invalid tenant ' ': 1-200 printable characters"),
        ({"idempotency_key": ""}, "invalid idempotency key '': 1-200 printable characters"),
        ({"command": "python 'unclosed"}, "invalid --command \"python 'unclosed\": No closing quotation"),
        ({"command": "  "}, "invalid --command: it is empty"),
        ({"parents": ["t_0123456789ab"]}, "task t_0123456789ab not found (see: hermes kanban list)"),
        ({"parents": ["bad id"]}, "invalid task id 'bad id': task ids look like t_3fa2b1c4d5e6 "
                                  "(see: hermes kanban list)"),
    ],
)
def test_create_refuses_bad_values_and_changes_nothing(
    board: Board, dump, kwargs: dict[str, Any], message: str
) -> None:
    board.create_task("existing")
    before = dump(board)
    kwargs = dict(kwargs)  # the parameter's dict is shared by every engine's run of this case
    title = kwargs.pop("title", "a title")
    with pytest.raises(HermesError) as err:
        board.create_task(title, **kwargs)
    assert err.value.exit_code == 1
    assert err.value.message == message
    assert dump(board) == before


def test_create_defaults_and_values(board: Board) -> None:
    t, created = board.create_task("  trimmed  ", body="multi\nline", priority=-5, command="python w.py {task_id}",
                                   tenant="acme", max_runtime="90s", max_retries=0, review=True)
    assert created
    assert t.id.startswith("t_") and len(t.id) == 14
    assert (t.title, t.body, t.priority, t.tenant, t.command) == ("trimmed", "multi\nline", -5, "acme",
                                                                   "python w.py {task_id}")
    assert (t.max_runtime_s, t.max_retries, t.review_required, t.status, t.attempts) == (90.0, 0, True, "ready", 0)
    d, _ = board.create_task("defaults")
    assert (d.priority, d.tenant, d.max_retries, d.max_runtime_s, d.review_required) == (0, None, 3, None, False)
    assert [e.kind for e in board.events()] == ["created", "created"]
    assert board.events()[0].payload == {"title": "trimmed", "status": "ready", "priority": -5, "parents": [],
                                         "tenant": "acme"}


# -- dependencies ------------------------------------------------------------------------------------------------------
def test_children_wait_for_every_parent_and_are_promoted_in_the_same_transaction(board: Board) -> None:
    a, _ = board.create_task("a")
    b, _ = board.create_task("b")
    child, _ = board.create_task("child", parents=[a.id, b.id, a.id])
    assert child.status == "todo"
    assert [p.id for p in board.detail(child.id).parents] == [a.id, b.id]
    board.complete(a.id)
    assert board.get_task(child.id).status == "todo"
    last = board.last_event_id()
    board.complete(b.id)
    assert board.get_task(child.id).status == "ready"
    kinds = [(e.kind, e.task_id) for e in board.events(last)]
    assert kinds == [("completed", b.id), ("promoted", child.id)]
    assert board.events(last)[1].payload == {"status": "ready", "parent": b.id}


def test_a_child_of_done_parents_starts_ready(board: Board, make_task: MakeTask) -> None:
    done = make_task("done")
    child, _ = board.create_task("child", parents=[done.id])
    assert child.status == "ready"


def test_archived_parents_are_refused_at_create_and_release_waiting_children(board: Board, make_task: MakeTask,
                                                                             dump) -> None:
    archived = make_task("archived")
    before = dump(board)
    with pytest.raises(InvalidValue) as err:
        board.create_task("x", parents=[archived.id])
    assert err.value.message == f"parent {archived.id} is archived; pick a live parent (see: hermes kanban list)"
    assert dump(board) == before
    p, _ = board.create_task("p")
    c, _ = board.create_task("c", parents=[p.id])
    board.archive(p.id)
    assert board.get_task(c.id).status == "ready"


def test_review_gated_parent_promotes_children_only_when_approved(board: Board) -> None:
    parent, _ = board.create_task("parent", review=True)
    child, _ = board.create_task("child", parents=[parent.id])
    claim = board.claim(parent.id)
    assert claim is not None
    assert board.complete(parent.id, claim.run_id).status == "review"
    assert board.get_task(child.id).status == "todo"
    assert board.approve(parent.id).status == "done"
    assert board.get_task(child.id).status == "ready"


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_cycles_are_refused_at_any_depth(board: Board, dump, depth: int) -> None:
    chain = [board.create_task("t0")[0]]
    for i in range(depth):
        chain.append(board.create_task(f"t{i + 1}", parents=[chain[-1].id])[0])
    before = dump(board)
    with pytest.raises(CycleRefused) as err:
        board.link(chain[-1].id, chain[0].id)
    assert err.value.exit_code == 1
    assert err.value.message == (
        f"linking {chain[-1].id} -> {chain[0].id} would create a cycle ({chain[0].id} is an ancestor)"
    )
    assert dump(board) == before


def test_self_link_is_a_cycle(board: Board, dump) -> None:
    t, _ = board.create_task("t")
    before = dump(board)
    with pytest.raises(CycleRefused) as err:
        board.link(t.id, t.id)
    assert err.value.message == f"cannot link {t.id} to itself"
    assert dump(board) == before


def test_link_demotes_a_ready_child_and_unlink_promotes_it(board: Board) -> None:
    p, _ = board.create_task("p")
    c, _ = board.create_task("c")
    assert board.link(p.id, c.id).status == "todo"
    assert board.link(p.id, c.id).status == "todo"  # linking twice is a no-op
    assert board.db.value("SELECT count(*) FROM links") == 1
    assert board.unlink(p.id, c.id).status == "ready"
    with pytest.raises(NotFound) as err:
        board.unlink(p.id, c.id)
    assert err.value.message == f"no link {p.id} -> {c.id} (see: hermes kanban show {c.id})"
    assert [e.kind for e in board.events(task_id=c.id)] == ["created", "linked", "status", "unlinked", "promoted"]


def test_linking_to_a_done_parent_keeps_the_child_ready(board: Board, make_task: MakeTask) -> None:
    done = make_task("done")
    c, _ = board.create_task("c")
    assert board.link(done.id, c.id).status == "ready"


@pytest.mark.parametrize("status", ["running", "review", "done", "archived"])
def test_only_waiting_tasks_can_gain_a_parent(board: Board, make_task: MakeTask, dump, status: str) -> None:
    p, _ = board.create_task("p")
    child = make_task(status)
    before = dump(board)
    with pytest.raises(InvalidTransition) as err:
        board.link(p.id, child.id)
    assert err.value.message == (
        f"task {child.id} is {status}; only todo, ready or blocked tasks can gain a parent"
    )
    assert dump(board) == before


# -- priorities and tenants --------------------------------------------------------------------------------------------
def test_claim_order_is_priority_then_age(board: Board) -> None:
    ids = {}
    for title, prio in [("low", -5), ("mid-old", 3), ("high", 9), ("mid-new", 3), ("zero", 0)]:
        ids[title] = board.create_task(title, priority=prio)[0].id
        time.sleep(0.002)  # distinct created_at, so "age" is well defined
    order = []
    while (c := board.claim()) is not None:
        order.append(c.task_id)
    assert order == [ids[t] for t in ("high", "mid-old", "mid-new", "zero", "low")]
    assert [t.id for t in board.list_tasks(status="running", sort="priority")] == order


def test_tenant_is_inherited_filtered_and_claimable(board: Board) -> None:
    root, _ = board.create_task("root", tenant="acme")
    other, _ = board.create_task("other", tenant="umbrella")
    child, _ = board.create_task("child", parents=[other.id, root.id])
    assert child.tenant == "umbrella"  # the first parent that has one
    own, _ = board.create_task("own", parents=[root.id], tenant="initech")
    assert own.tenant == "initech"
    assert [t.id for t in board.list_tasks(tenant="acme")] == [root.id]
    c = board.claim(tenant="acme")
    assert c is not None and c.task_id == root.id
    assert board.claim(tenant="acme") is None
    assert board.counts(tenant="umbrella")["ready"] == 1


# -- idempotency -------------------------------------------------------------------------------------------------------
def test_idempotency_key_gives_one_task_until_it_is_archived(board: Board, dump) -> None:
    first, created = board.create_task("build", idempotency_key="build-42")
    assert created
    before = dump(board)
    again, created = board.create_task("a different title", idempotency_key="build-42", priority=9)
    assert (again.id, created) == (first.id, False)
    assert dump(board) == before  # no row, no event
    board.complete(first.id)
    assert board.create_task("x", idempotency_key="build-42")[0].id == first.id  # done still holds the key
    board.archive(first.id)
    fresh, created = board.create_task("build again", idempotency_key="build-42")
    assert created and fresh.id != first.id


@pytest.mark.sqlite_only  # raw APSW; tests/store/test_pg_board.py checks the PostgreSQL index
def test_the_unique_index_enforces_idempotency_keys(board: Board) -> None:
    """Even SQL that bypasses the API's lookup cannot give two live tasks one key."""
    import apsw

    t, _ = board.create_task("x", idempotency_key="k")
    with pytest.raises(apsw.ConstraintError):
        board.db.conn.execute(
            "INSERT INTO tasks(id, title, status, idempotency_key, created_at, updated_at) "
            "VALUES ('t_ffffffffffff', 'dup', 'ready', 'k', 0, 0)"
        )
    assert board.db.value("SELECT count(*) FROM tasks WHERE idempotency_key = 'k'") == 1


RACER = r"""
import sys
from hermes_cli.kanban import Board
b = Board.open()
sys.stdin.readline()
task, created = b.create_task("racing " + sys.argv[1], idempotency_key="the-key")
print(task.id, created, flush=True)
b.close()
"""


def test_processes_racing_one_idempotency_key_get_one_task(board: Board) -> None:
    n = 6
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(n)
    ]
    time.sleep(0.5)  # let every process open the board, then release them together
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 and err == "" for p, (_, err) in zip(procs, outs, strict=True)), outs
    lines = [out.split() for out, _ in outs]
    assert len({task_id for task_id, _ in lines}) == 1
    assert sorted(created for _, created in lines) == ["False"] * (n - 1) + ["True"]
    assert board.db.value("SELECT count(*) FROM tasks") == 1
    assert board.db.value("SELECT count(*) FROM events WHERE kind = 'created'") == 1


# -- runs and fencing --------------------------------------------------------------------------------------------------
def test_claim_opens_a_run_whose_id_is_the_fencing_token(board: Board) -> None:
    t, _ = board.create_task("t")
    before = time.time()
    c = board.claim(t.id, worker="w1", ttl="5m", pid=123, pid_create_time=1.5)
    assert c is not None
    assert c.task_id == t.id and c.attempt == 1
    assert before + 300 <= c.lease_expires_at <= time.time() + 300
    run = board.detail(t.id).runs[0]
    assert (run.id, run.worker, run.pid, run.pid_create_time, run.ended_at) == (c.run_id, "w1", 123, 1.5, None)
    task = board.get_task(t.id)
    assert (task.status, task.current_run_id, task.lease_expires_at) == ("running", c.run_id, c.lease_expires_at)


def test_a_second_claim_of_a_claimed_task_is_a_conflict(board: Board, dump) -> None:
    t, _ = board.create_task("t")
    c = board.claim(t.id)
    assert c is not None
    before = dump(board)
    with pytest.raises(AlreadyClaimed) as err:
        board.claim(t.id)
    assert err.value.exit_code == 3
    assert err.value.message.startswith(f"task {t.id} is claimed by run {c.run_id} until ")
    assert dump(board) == before
    assert board.claim() is None  # nothing else is ready


@pytest.mark.parametrize("op", ["heartbeat", "complete", "block", "request_review", "finish_run"])
def test_a_run_that_is_not_the_current_open_run_changes_nothing(board: Board, dump, op: str) -> None:
    t, _ = board.create_task("t")
    old = board.claim(t.id, ttl=0.001)
    assert old is not None
    time.sleep(0.01)  # the lease runs out ...
    new = board.claim(t.id)  # ... and the task is taken over by a new run
    assert new is not None and new.run_id != old.run_id
    before = dump(board)
    call = {
        "heartbeat": lambda r: board.heartbeat(t.id, r),
        "complete": lambda r: board.complete(t.id, r, summary="late"),
        "block": lambda r: board.block(t.id, r, reason="late"),
        "request_review": lambda r: board.request_review(t.id, r),
        "finish_run": lambda r: board.finish_run(t.id, r, "crashed", exit_code=1),
    }[op]
    for stale in (old.run_id, new.run_id + 1000):
        with pytest.raises(StaleRun) as err:
            call(stale)
        assert err.value.exit_code == 3
        assert err.value.message.startswith(f"run {stale} is not the current run of task {t.id} (run {new.run_id}); ")
        assert err.value.message.endswith(" refused, nothing changed")
        assert dump(board) == before
    call(new.run_id)  # the current run may


def test_takeover_closes_the_expired_run_as_reclaimed(board: Board) -> None:
    t, _ = board.create_task("t")
    old = board.claim(t.id, ttl=0.001)
    assert old is not None
    time.sleep(0.01)
    new = board.claim()
    assert new is not None and new.task_id == t.id and new.attempt == 2
    runs = board.detail(t.id).runs
    assert [(r.id, r.outcome) for r in runs] == [(old.run_id, "reclaimed"), (new.run_id, None)]
    kinds = [e.kind for e in board.events(task_id=t.id)]
    assert kinds == ["created", "claimed", "reclaimed", "claimed"]


def test_a_run_of_another_task_cannot_write(board: Board) -> None:
    a, _ = board.create_task("a")
    b, _ = board.create_task("b")
    ca, cb = board.claim(a.id), board.claim(b.id)
    assert ca is not None and cb is not None
    with pytest.raises(StaleRun):
        board.complete(a.id, cb.run_id)


def test_repeating_a_completion_of_the_same_run_is_a_no_op(board: Board, dump) -> None:
    t, _ = board.create_task("t")
    c = board.claim(t.id)
    assert c is not None
    board.complete(t.id, c.run_id, summary="once")
    before = dump(board)
    assert board.complete(t.id, c.run_id, summary="twice").status == "done"
    assert dump(board) == before


def test_heartbeat_extends_the_lease_of_task_and_run(board: Board) -> None:
    t, _ = board.create_task("t")
    c = board.claim(t.id, ttl="10s")
    assert c is not None
    hb = board.heartbeat(t.id, c.run_id, ttl="1h")
    assert hb.lease_expires_at > c.lease_expires_at + 3000
    assert board.get_task(t.id).lease_expires_at == hb.lease_expires_at
    assert board.detail(t.id).runs[0].lease_expires_at == hb.lease_expires_at


def test_force_complete_closes_the_live_run(board: Board) -> None:
    t, _ = board.create_task("t")
    c = board.claim(t.id)
    assert c is not None
    assert board.complete(t.id, force=True, summary="by hand").status == "done"
    assert board.detail(t.id).runs[0].outcome == "completed"
    with pytest.raises(StaleRun):
        board.heartbeat(t.id, c.run_id)


def test_archiving_a_running_task_fences_its_worker(board: Board) -> None:
    t, _ = board.create_task("t")
    c = board.claim(t.id)
    assert c is not None
    board.archive(t.id)
    assert board.detail(t.id).runs[0].outcome == "reclaimed"
    with pytest.raises(StaleRun):
        board.complete(t.id, c.run_id)


# -- the review gate ---------------------------------------------------------------------------------------------------
def test_review_gate_complete_approve(board: Board) -> None:
    t, _ = board.create_task("t", review=True)
    c = board.claim(t.id)
    assert c is not None
    r = board.complete(t.id, c.run_id, summary="please look")
    assert (r.status, r.summary, r.current_run_id) == ("review", "please look", None)
    assert board.detail(t.id).runs[0].outcome == "review_requested"
    done = board.approve(t.id, summary="approved")
    assert (done.status, done.summary) == ("done", "approved")
    assert done.completed_at is not None


def test_review_gate_request_changes_sends_it_back_to_ready_with_a_comment(board: Board) -> None:
    t, _ = board.create_task("t", review=True)
    c = board.claim(t.id)
    assert c is not None
    board.complete(t.id, c.run_id)
    back = board.request_changes(t.id, reason="add a test")
    assert (back.status, back.attempts) == ("ready", 0)
    assert [(x.author, x.body) for x in board.detail(t.id).comments] == [("review", "add a test")]
    with pytest.raises(InvalidValue) as err:
        board.request_changes(t.id, reason="  ")
    assert err.value.message == 'say what needs to change, e.g. hermes kanban request-changes t_3fa2 "add tests"'
    c2 = board.claim(t.id)
    assert c2 is not None and c2.attempt == 1
    assert board.complete(t.id, c2.run_id).status == "review"


def test_request_review_by_a_worker_on_an_ungated_task(board: Board) -> None:
    t, _ = board.create_task("t")
    c = board.claim(t.id)
    assert c is not None
    assert board.request_review(t.id, c.run_id, summary="unsure").status == "review"
    assert board.approve(t.id).status == "done"


# -- failures, retries, giving up --------------------------------------------------------------------------------------
def test_crashes_retry_with_backoff_then_give_up(board: Board) -> None:
    t, _ = board.create_task("t", max_retries=2)
    for attempt in (1, 2, 3):
        c = board.claim(t.id)
        assert c is not None and c.attempt == attempt
        after = board.finish_run(t.id, c.run_id, "crashed", exit_code=1, retry_after=0)
        if attempt < 3:
            assert after.status == "ready" and after.retry_at is not None
    assert after.status == "blocked"
    kinds = [e.kind for e in board.events(task_id=t.id)]
    assert kinds[-2:] == ["crashed", "gave_up"]
    assert [r.outcome for r in board.detail(t.id).runs] == ["crashed"] * 3
    assert board.unblock(t.id).attempts == 0  # a fresh retry budget


def test_a_retry_waits_for_its_backoff(board: Board) -> None:
    t, _ = board.create_task("t")
    c = board.claim(t.id)
    assert c is not None
    board.finish_run(t.id, c.run_id, "timed_out", retry_after=3600)
    assert board.claim() is None  # not before retry_at
    assert board.claim(t.id) is not None  # naming it explicitly is a person's override


def test_exit_zero_without_a_report_completes(board: Board) -> None:
    t, _ = board.create_task("t")
    c = board.claim(t.id)
    assert c is not None
    done = board.finish_run(t.id, c.run_id, "completed", exit_code=0)
    assert (done.status, done.summary) == ("done", "exited 0")
    assert board.detail(t.id).runs[0].exit_code == 0


def test_reclaim_expired(board: Board) -> None:
    t, _ = board.create_task("t", max_retries=0)
    u, _ = board.create_task("u")
    assert board.claim(t.id, ttl=0.001) is not None
    assert board.claim(u.id, ttl="1h") is not None
    time.sleep(0.01)
    out = board.reclaim_expired()
    assert [(x.id, x.status) for x in out] == [(t.id, "blocked")]  # no retries left: gave up
    assert board.get_task(u.id).status == "running"


def test_a_claim_that_finds_nothing_changes_nothing(board: Board, dump) -> None:
    """Regression: claim() with no ready task used to commit the reclaim of expired leases and then report nothing
    claimed, so `hermes kanban claim --tenant x` exited 1 after changing the board."""
    t, _ = board.create_task("t", max_retries=0)
    assert board.claim(t.id, ttl=0.001) is not None
    time.sleep(0.01)
    before = dump(board)
    assert board.claim(tenant="nobody") is None
    assert dump(board) == before
    assert board.get_task(t.id).status == "running"
    assert [x.id for x in board.reclaim_expired()] == [t.id]  # reclaiming is reclaim_expired()'s job


# -- reading -----------------------------------------------------------------------------------------------------------
def test_list_filters_sorts_and_validates(board: Board, make_task: MakeTask) -> None:
    made = {s: make_task(s) for s in STATUSES}
    live = {t.id for s, t in made.items() if s != "archived"}
    assert {t.id for t in board.list_tasks()} >= live
    assert made["archived"].id not in {t.id for t in board.list_tasks()}
    assert [t.id for t in board.list_tasks(status="archived")] == [made["archived"].id]
    assert [t.id for t in board.list_tasks(search="REVIEW task")] == [made["review"].id]
    assert len(board.list_tasks(limit=2)) == 2
    for kwargs, message in (
        ({"status": "bogus"}, "invalid status 'bogus': use one of triage, todo, ready, running, review, blocked, "
                              "done, archived"),
        ({"sort": "random"}, "invalid sort 'random': use one of priority, age, newest, updated, created, "
                             "created-desc, priority-desc, status, assignee, title"),
        ({"limit": -1}, "invalid limit -1: must be 0 or more"),
        ({"parent": "t_0123456789ab"}, "task t_0123456789ab not found (see: hermes kanban list)"),
    ):
        with pytest.raises(HermesError) as err:
            board.list_tasks(**kwargs)
        assert err.value.message == message


def test_events_are_in_commit_order_and_filterable(board: Board) -> None:
    t, _ = board.create_task("t")
    c = board.claim(t.id)
    assert c is not None
    board.complete(t.id, c.run_id)
    evs = board.events()
    assert [e.id for e in evs] == sorted(e.id for e in evs)
    assert [e.kind for e in evs] == ["created", "claimed", "completed"]
    assert [e.kind for e in board.events(evs[0].id)] == ["claimed", "completed"]
    assert [e.kind for e in board.events(kinds=["completed"])] == ["completed"]
    assert board.events(evs[-1].id) == []
    assert evs[1].run_id == c.run_id == evs[2].run_id


def test_stats_and_counts(board: Board, make_task: MakeTask) -> None:
    for s in STATUSES:
        make_task(s)
    counts = board.counts()
    assert set(counts) == set(STATUSES)
    s = board.stats()
    assert s["board"] == "default"
    assert s["total"] == sum(counts.values())
    assert s["open_runs"] == 1 and s["expired_leases"] == 0
    assert s["by_status"] == counts


def test_detail_of_a_task(board: Board) -> None:
    p, _ = board.create_task("p")
    t, _ = board.create_task("t", parents=[p.id])
    k, _ = board.create_task("k", parents=[t.id])
    board.comment(t.id, "hello", author="ana")
    d = board.detail(t.id, events=1)
    assert [x.id for x in d.parents] == [p.id]
    assert [x.id for x in d.children] == [k.id]
    assert [(c.author, c.body) for c in d.comments] == [("ana", "hello")]
    assert [e.kind for e in d.events] == ["commented"]
    assert d.as_dict()["parents"] == [{"id": p.id, "title": "p", "status": "ready"}]


def test_comment_validation(board: Board, dump) -> None:
    t, _ = board.create_task("t")
    before = dump(board)
    for call, message in (
        (lambda: board.comment(t.id, "  "), 'comment is empty: say something, e.g. hermes kanban comment t_3fa2 '
                                            '"looks good"'),
        (lambda: board.comment(t.id, "x", author=""), "invalid author '': 1-200 printable characters"),
        (lambda: board.comment("t_0123456789ab", "x"), "task t_0123456789ab not found (see: hermes kanban list)"),
    ):
        with pytest.raises(HermesError) as err:
            call()
        assert err.value.message == message
    assert dump(board) == before


def test_a_board_object_is_usable_after_every_kind_of_refusal(board: Board, tmp_path: Path) -> None:
    t, _ = board.create_task("t")
    for bad in (lambda: board.claim("t_0123456789ab"), lambda: board.unblock(t.id), lambda: board.link(t.id, t.id)):
        with pytest.raises(HermesError):
            bad()
    assert board.claim(t.id) is not None
