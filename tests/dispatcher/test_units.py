"""Pure functions of the dispatcher: settings precedence and validation, argv placeholders, environment, log
rotation, and the dispatcher-lease store (acquire, hold, take over, release, break)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from hermes_cli.kanban import Board, InvalidValue, LeaseHeld
from hermes_cli.kanban.core import procs
from hermes_cli.kanban.dispatch import lease as lease_api
from hermes_cli.kanban.dispatch.spawn import build_argv, rotate, worker_env
from hermes_cli.kanban.domain.config import DispatchSettings, load_settings
from hermes_cli.kanban.store import dispatch as dispatch_sql
from hermes_cli.kanban.store import leases as lease_sql

from .conftest import configure


# -- settings ----------------------------------------------------------------------------------------------------------
def test_defaults_then_config_then_flags(board: Board) -> None:
    configure(board, max_spawn=2, failure_limit=5, max_runtime_default="30m", default_command="python3 w.py {task_id}")
    s = load_settings(board.paths, {"max_spawn": 7, "failure_limit": None})
    assert s.max_spawn == 7  # the flag wins
    assert s.failure_limit == 5  # not given as a flag: the config file's
    assert s.max_runtime_default == 1800.0
    assert s.default_command == "python3 w.py {task_id}"
    assert s.kill_grace == 0.5  # from the FAST test config
    assert DispatchSettings().max_spawn == 4


def test_unknown_config_key_is_refused_with_the_file_named(board: Board) -> None:
    configure(board, max_spwan=3)
    with pytest.raises(InvalidValue) as e:
        load_settings(board.paths)
    assert e.value.message.startswith(f"config {board.paths.config_file}: unknown setting dispatch.max_spwan (known: ")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_spawn": 0}, "max_spawn must be an integer from 1 to 1000, got 0"),
        ({"max_spawn": "4"}, "max_spawn must be an integer from 1 to 1000, got '4'"),
        ({"poll_interval": "soon"}, "invalid poll-interval 'soon': use a number with an optional unit"),
        ({"doorbell": "yes"}, "doorbell must be true or false, got 'yes'"),
        ({"default_command": "python3 'unclosed"}, "invalid --command \"python3 'unclosed\": No closing quotation"),
        ({"default_command": "echo a\u0000b"}, "invalid --command: it contains a NUL byte"),
    ],
)
def test_bad_config_values(board: Board, settings: dict[str, object], message: str) -> None:
    configure(board, **settings)
    with pytest.raises(InvalidValue) as e:
        load_settings(board.paths)
    assert e.value.message.startswith(f"config {board.paths.config_file}: {message}")


def test_config_that_is_not_toml(board: Board) -> None:
    board.paths.config_file.write_text("[dispatch\n", encoding="utf-8")
    with pytest.raises(InvalidValue) as e:
        load_settings(board.paths)
    assert e.value.message.startswith(f"config {board.paths.config_file} is not valid TOML: ")


def test_other_tables_in_the_config_file_are_not_ours(board: Board) -> None:
    board.paths.config_file.write_text('[backup]\nkeep = 3\n[dispatch]\nmax_spawn = 3\n', encoding="utf-8")
    assert load_settings(board.paths).max_spawn == 3


def test_a_symlinked_config_file_is_refused(board: Board, tmp_path) -> None:
    real = tmp_path / "elsewhere.toml"
    real.write_text("[dispatch]\nmax_spawn = 3\n", encoding="utf-8")
    board.paths.config_file.unlink()
    board.paths.config_file.symlink_to(real)
    with pytest.raises(InvalidValue, match="a symlink is refused"):
        load_settings(board.paths)


# -- argv and environment ----------------------------------------------------------------------------------------------
def test_placeholders_are_substituted_inside_single_arguments() -> None:
    values = {"task_id": "t_ab12", "run_id": "7", "board": "b", "workspace": "/w s", "title": "a; rm -rf / {run_id}"}
    argv = build_argv("run --task={task_id} '{title}' {workspace}/out {json:1} '{\"k\": 1}' {run_id}", values)
    # one argument per shell word, whatever the substituted text contains; no recursive substitution
    assert argv == ["run", "--task=t_ab12", "a; rm -rf / {run_id}", "/w s/out", "{json:1}", '{"k": 1}', "7"]


def test_bad_commands() -> None:
    with pytest.raises(InvalidValue, match="No closing quotation"):
        build_argv("python3 'x", {})
    with pytest.raises(InvalidValue, match="it is empty"):
        build_argv("   ", {})


def test_worker_env_sets_the_contract_and_drops_stale_values(tmp_path) -> None:
    base = {"PATH": "/bin", "HERMES_KANBAN_TASK": "t_old", "HERMES_KANBAN_SYNCHRONOUS": "extra"}
    env = worker_env(base, db=tmp_path / "k.db", board="b", task_id="t_new", run_id=3, workspace=tmp_path)
    assert env == {
        "PATH": "/bin", "HERMES_KANBAN_SYNCHRONOUS": "extra", "HERMES_KANBAN_DB": str(tmp_path / "k.db"),
        "HERMES_KANBAN_BOARD": "b", "HERMES_KANBAN_TASK": "t_new", "HERMES_KANBAN_RUN_ID": "3",
        "HERMES_KANBAN_WORKSPACE": str(tmp_path),
    }


def test_log_rotation_keeps_n_backups(tmp_path) -> None:
    log = tmp_path / "t.log"
    for generation in range(4):
        log.write_text(f"gen{generation}" * 100, encoding="utf-8")
        assert rotate(log, max_bytes=100, backups=2)
    assert not log.exists()
    assert (tmp_path / "t.log.1").read_text(encoding="utf-8").startswith("gen3")
    assert (tmp_path / "t.log.2").read_text(encoding="utf-8").startswith("gen2")
    assert not (tmp_path / "t.log.3").exists()
    log.write_text("small", encoding="utf-8")
    assert not rotate(log, max_bytes=100, backups=2)


# -- process identity --------------------------------------------------------------------------------------------------
def test_a_live_pid_with_another_start_time_is_dead() -> None:
    p = subprocess.Popen(["sleep", "30"])
    try:
        started = procs.create_time(p.pid)
        assert procs.state(p.pid, started) == procs.ProcState.ALIVE
        assert procs.state(p.pid, started - 5) == procs.ProcState.DEAD
        assert not procs.signal_verified(p.pid, started - 5, 15)  # never signalled
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()
    assert procs.state(p.pid, started) == procs.ProcState.DEAD


# -- the dispatcher lease ----------------------------------------------------------------------------------------------
def _fake_holder(board: Board, pid: int, started: float | None, *, age: float) -> None:
    """Install a lease held by another process, last refreshed `age` seconds ago."""
    def tx() -> None:
        epoch = lease_sql.next_epoch(board.db)
        lease_sql.put(board.db, host=procs.HOST, pid=pid, pid_create_time=started, epoch=epoch,
                      now=time.time() - age)
    board.db.write(tx)


def _dead_process() -> tuple[int, float]:
    p = subprocess.Popen(["true"])
    started = procs.create_time(p.pid)
    p.wait()
    assert started is not None
    return p.pid, started


def test_acquire_refuses_a_fresh_lease_and_takes_over_a_stale_one(board: Board) -> None:
    live = subprocess.Popen(["sleep", "30"])
    try:
        _fake_holder(board, live.pid, procs.create_time(live.pid), age=1.0)
        with pytest.raises(LeaseHeld) as e:
            lease_api.acquire(board, grace=5.0)
        assert e.value.message.startswith(f"lease held by {procs.HOST}:{live.pid} (epoch 1, refreshed 1.")
        lease, previous = lease_api.acquire(board, grace=0.5)  # stale: taken over although its holder lives
    finally:
        live.kill()
        live.wait()
    assert previous is not None and previous.pid == live.pid and previous.epoch == 1
    assert lease.epoch == 2 and lease.pid == os.getpid()
    kinds = [e.kind for e in board.events(kinds=["dispatcher_started"])]
    assert kinds == ["dispatcher_started"]


def test_acquire_takes_over_at_once_from_a_holder_gone_from_this_host(board: Board) -> None:
    # fresh (refreshed 1 s ago, grace 30 s), but no process with that pid and start time: taken over now
    pid, started = _dead_process()
    _fake_holder(board, pid, started, age=1.0)
    lease, previous = lease_api.acquire(board, grace=30.0)
    assert previous is not None and previous.pid == pid and lease.epoch == 2
    # the pid reused by another process (a live one, but started at another time): the holder is gone too
    live = subprocess.Popen(["sleep", "30"])
    try:
        live_started = procs.create_time(live.pid)
        assert live_started is not None
        _fake_holder(board, live.pid, live_started - 60, age=1.0)
        lease, previous = lease_api.acquire(board, grace=30.0)
        assert previous is not None and previous.pid == live.pid and lease.epoch == 4
        # the same live process with its real start time: never taken within the grace
        _fake_holder(board, live.pid, live_started, age=1.0)
        with pytest.raises(LeaseHeld):
            lease_api.acquire(board, grace=30.0)
        # on another host nothing can be verified from here: only the grace counts
        board.db.write(lambda: board.db.execute("UPDATE dispatcher_lease SET host = 'elsewhere'"))
        with pytest.raises(LeaseHeld):
            lease_api.acquire(board, grace=30.0)
    finally:
        live.kill()
        live.wait()


def test_epochs_are_never_reused_and_a_lost_lease_cannot_refresh(board: Board) -> None:
    first, _ = lease_api.acquire(board, grace=5.0)
    assert lease_api.release(board, first.epoch, reason="test")
    assert lease_api.read_lease(board) is None
    second, _ = lease_api.acquire(board, grace=5.0)
    assert second.epoch == first.epoch + 1
    assert not lease_api.refresh(board, first.epoch)  # an old epoch changes nothing
    assert lease_api.refresh(board, second.epoch)
    assert not lease_api.release(board, first.epoch, reason="stale")
    assert lease_api.read_lease(board).epoch == second.epoch  # type: ignore[union-attr]
    with pytest.raises(LeaseHeld, match=f"dispatcher lease \\(epoch {first.epoch}\\) was lost"):
        board.db.write(lambda: lease_api.check_held(board, first.epoch))


def test_break_lock_never_breaks_a_live_or_fresh_lease(board: Board) -> None:
    # fresh (refreshed within max-age) and its holder not provably gone: refused
    live = subprocess.Popen(["sleep", "30"])
    try:
        _fake_holder(board, live.pid, procs.create_time(live.pid), age=0.5)
        with pytest.raises(LeaseHeld, match="younger than --max-age 5s; not breaking a live lease"):
            lease_api.break_lock(board, max_age=5.0)
        # old, but its holder is a live process on this host: refused
        _fake_holder(board, live.pid, procs.create_time(live.pid), age=60.0)
        with pytest.raises(LeaseHeld, match=f"its process is alive on this host; not breaking a live lease "
                                            f"\\(stop it: kill {live.pid}\\)"):
            lease_api.break_lock(board, max_age=5.0)
    finally:
        live.kill()
        live.wait()
    # old and dead: removed, with an event
    broken = lease_api.break_lock(board, max_age=5.0)
    assert broken is not None and broken.pid == live.pid
    assert lease_api.read_lease(board) is None
    assert [e.payload["holder"] for e in board.events(kinds=["dispatcher_lock_broken"])] == [f"{procs.HOST}:{live.pid}"]
    assert lease_api.break_lock(board, max_age=5.0) is None  # nothing left to break
    # fresh, but its holder is provably gone from this host: removed (a plain acquire would take it over anyway)
    pid, started = _dead_process()
    _fake_holder(board, pid, started, age=0.5)
    gone = lease_api.break_lock(board, max_age=5.0)
    assert gone is not None and gone.pid == pid
    assert lease_api.read_lease(board) is None


# -- the ready queue ---------------------------------------------------------------------------------------------------
def test_claim_and_dispatch_take_ready_tasks_in_one_order(board: Board) -> None:
    """Pull workers (`claim` without a task) and the dispatcher pick from the same queue in the same order: priority,
    then age; tasks that share an instant go in the claim-order index's order for both (store/tasks.py CLAIM_ORDER),
    so one does not take them in one order and the other in another."""
    tasks = [board.create_task(f"task {i}", command="true")[0] for i in range(10)]
    tied = tasks[3:7]  # four tasks of one priority and one instant, between older and newer ones
    board.db.write(lambda: board.db.execute(
        f"UPDATE tasks SET priority = 5, created_at = ? WHERE id IN ({', '.join('?' * len(tied))})",
        (tied[0].created_at, *(t.id for t in tied))))
    order = dispatch_sql.dispatchable(board.db, time.time(), any_command=False, limit=10)
    assert sorted(order[:4]) == sorted(t.id for t in tied)  # the higher priority first
    assert order[4:] == [t.id for t in tasks if t not in tied]  # then by age
    claimed = []
    while (claim := board.claim(worker="pull")) is not None:
        claimed.append(claim.task_id)
        # the dispatcher's view of what is left starts where the pull workers' next claim will
        assert dispatch_sql.dispatchable(board.db, time.time(), any_command=False, limit=10) == order[len(claimed):]
    assert claimed == order
