"""The dispatcher lease's rules, one by one and in-process, where mutation testing (bench/mutation.sh leases,
docs/mutation.md) found that the end-to-end tests would not notice a change: epochs, takeover after the grace,
refresh and release only by the holder's epoch, and break-lock never removing a live lease.

Other holders are real processes (a `sleep` child, alive or reaped), named in the lease row the way a dispatcher on
another host or in another process would leave it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator

import psutil
import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.core import procs
from hermes_cli.kanban.core.errors import LeaseHeld
from hermes_cli.kanban.dispatch import lease as leases
from hermes_cli.kanban.store import leases as sql

GRACE = 30.0


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "60"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def put_lease(board: Board, *, host: str, pid: int, started: float | None, age: float) -> int:
    """Install another holder whose last refresh was `age` seconds ago; returns its epoch."""

    def tx() -> int:
        epoch = sql.next_epoch(board.db)
        sql.put(board.db, host=host, pid=pid, pid_create_time=started, epoch=epoch, now=time.time() - age)
        return epoch

    return board.db.write(tx)


def events(board: Board, kind: str) -> list[dict[str, object]]:
    return [e.payload for e in board.events(kinds=[kind])]


def test_the_first_lease_has_epoch_1_and_names_this_process(board: Board) -> None:
    before = time.time()
    lease, previous = leases.acquire(board, grace=GRACE)
    host, pid, started = procs.identity()
    assert previous is None
    assert (lease.host, lease.pid, lease.pid_create_time, lease.epoch) == (host, pid, started, 1)
    assert before <= lease.acquired_at == lease.refreshed_at <= time.time()
    assert leases.read_lease(board) == lease
    assert lease.is_mine() and lease.holder == f"{host}:{pid}"
    assert events(board, "dispatcher_started") == [
        {"host": host, "pid": pid, "epoch": 1, "took_over_from": None, "took_over_epoch": None}]


def test_a_live_holder_within_the_grace_keeps_the_lease(board: Board, sleeper: subprocess.Popen[bytes]) -> None:
    epoch = put_lease(board, host="elsewhere", pid=sleeper.pid, started=procs.create_time(sleeper.pid), age=1.0)
    with pytest.raises(LeaseHeld, match=rf"^lease held by elsewhere:{sleeper.pid} \(epoch {epoch}, refreshed 1\.\ds"):
        leases.acquire(board, grace=GRACE)
    assert leases.read_lease(board).epoch == epoch  # type: ignore[union-attr]
    assert events(board, "dispatcher_started") == []


def test_a_holder_silent_past_the_grace_is_taken_over_with_the_next_epoch(board: Board) -> None:
    old = put_lease(board, host="elsewhere", pid=4242, started=123.0, age=GRACE + 5)
    lease, previous = leases.acquire(board, grace=GRACE)
    assert previous is not None and (previous.holder, previous.epoch) == ("elsewhere:4242", old)
    assert lease.epoch == old + 1 and lease.is_mine()
    assert events(board, "dispatcher_started")[-1]["took_over_from"] == "elsewhere:4242"
    assert events(board, "dispatcher_started")[-1]["took_over_epoch"] == old


def test_this_process_may_take_its_own_lease_again(board: Board) -> None:
    first, _ = leases.acquire(board, grace=GRACE)
    second, previous = leases.acquire(board, grace=GRACE)
    assert previous == first and second.epoch == first.epoch + 1


def test_epochs_are_never_reused(board: Board) -> None:
    first, _ = leases.acquire(board, grace=GRACE)
    assert leases.release(board, first.epoch, reason="stopped")
    second, previous = leases.acquire(board, grace=GRACE)
    assert previous is None and second.epoch == first.epoch + 1
    # Even if the remembered epoch were lost, the one in the lease row is never handed out again.
    board.db.write(lambda: board.db.execute("DELETE FROM meta WHERE key = ?", (sql.EPOCH_KEY,)))
    third, _ = leases.acquire(board, grace=GRACE)
    assert third.epoch == second.epoch + 1


def test_refresh_moves_the_lease_forward_only_for_its_epoch(board: Board) -> None:
    lease, _ = leases.acquire(board, grace=GRACE)
    time.sleep(0.01)
    assert leases.refresh(board, lease.epoch) is True
    refreshed = leases.read_lease(board)
    assert refreshed is not None and refreshed.refreshed_at > lease.refreshed_at
    assert refreshed.acquired_at == lease.acquired_at
    assert leases.refresh(board, lease.epoch + 1) is False
    assert leases.read_lease(board) == refreshed
    n = len(board.events())
    leases.refresh(board, lease.epoch)
    assert len(board.events()) == n  # a refresh is not a state change: no event


def test_check_held_inside_a_claim_transaction(board: Board) -> None:
    lease, _ = leases.acquire(board, grace=GRACE)
    board.db.write(lambda: leases.check_held(board, lease.epoch))  # held: no error
    with pytest.raises(LeaseHeld, match=rf"epoch {lease.epoch + 1}\) was lost; it is now held by {lease.holder} "):
        board.db.write(lambda: leases.check_held(board, lease.epoch + 1))
    leases.release(board, lease.epoch, reason="done")
    with pytest.raises(LeaseHeld, match="was lost; it is now held by nobody$"):
        board.db.write(lambda: leases.check_held(board, lease.epoch))


def test_release_only_by_the_holding_epoch_and_only_once(board: Board) -> None:
    lease, _ = leases.acquire(board, grace=GRACE)
    assert leases.release(board, lease.epoch + 1, reason="wrong") is False
    assert leases.read_lease(board) == lease
    assert leases.release(board, lease.epoch, reason="signal") is True
    assert leases.read_lease(board) is None
    assert leases.release(board, lease.epoch, reason="again") is False
    assert events(board, "dispatcher_stopped") == [{"epoch": lease.epoch, "reason": "signal"}]


def test_break_lock_with_no_lease_or_our_own_does_nothing(board: Board) -> None:
    assert leases.break_lock(board, max_age=0) is None
    lease, _ = leases.acquire(board, grace=GRACE)
    assert leases.break_lock(board, max_age=0) is None
    assert leases.read_lease(board) == lease
    assert events(board, "dispatcher_lock_broken") == []


def test_break_lock_never_removes_a_lease_younger_than_max_age(board: Board) -> None:
    epoch = put_lease(board, host="elsewhere", pid=4242, started=123.0, age=5.0)
    with pytest.raises(LeaseHeld, match=r"younger than --max-age 60s; not breaking a live lease"):
        leases.break_lock(board, max_age=60)
    assert leases.read_lease(board).epoch == epoch  # type: ignore[union-attr]


def test_break_lock_never_removes_the_lease_of_a_live_local_process(
    board: Board, sleeper: subprocess.Popen[bytes]
) -> None:
    put_lease(board, host=procs.HOST, pid=sleeper.pid, started=procs.create_time(sleeper.pid), age=120.0)
    with pytest.raises(LeaseHeld, match=rf"its process is alive on this host; not breaking a live lease "
                                        rf"\(stop it: kill {sleeper.pid}\)"):
        leases.break_lock(board, max_age=60)
    assert leases.read_lease(board) is not None


def test_break_lock_removes_an_old_lease_of_a_dead_local_process(board: Board) -> None:
    gone = subprocess.Popen(["true"])
    started = psutil.Process(gone.pid).create_time()
    gone.wait()
    epoch = put_lease(board, host=procs.HOST, pid=gone.pid, started=started, age=120.0)
    broken = leases.break_lock(board, max_age=60)
    assert broken is not None and (broken.pid, broken.epoch) == (gone.pid, epoch)
    assert leases.read_lease(board) is None
    [ev] = events(board, "dispatcher_lock_broken")
    assert (ev["holder"], ev["epoch"], ev["max_age_s"]) == (f"{procs.HOST}:{gone.pid}", epoch, 60)
    assert 120.0 <= float(ev["age_s"]) < 180.0  # type: ignore[arg-type]


def test_a_lease_refreshed_in_the_future_is_zero_seconds_old() -> None:
    lease = leases.DispatcherLease("h", 1, None, 3, acquired_at=100.0, refreshed_at=200.0)
    assert lease.age(150.0) == 0.0 and lease.age(260.5) == 60.5
    assert lease.describe(260.5) == "h:1 (epoch 3, refreshed 60.5s ago)"
    assert lease.local_state() is None  # another host: cannot tell
    d = lease.as_dict()
    assert json.dumps(d) and (d["holder"], d["host"], d["pid"], d["epoch"]) == ("h:1", "h", 1, 3)
    assert d["acquired_at"].startswith("1970-01-01T00:01:40")


def test_a_lease_refreshed_ahead_of_our_clock_is_held_even_with_no_grace(
    board: Board, sleeper: subprocess.Popen[bytes]
) -> None:
    """A holder on a host whose clock runs ahead has an age of 0 (never negative): a grace of 0 still keeps it."""
    put_lease(board, host="elsewhere", pid=sleeper.pid, started=procs.create_time(sleeper.pid), age=-60.0)
    with pytest.raises(LeaseHeld, match="refreshed 0.0s ago"):
        leases.acquire(board, grace=0)


def test_a_lease_is_ours_only_by_host_pid_and_start_time_together(
    board: Board, sleeper: subprocess.Popen[bytes]
) -> None:
    """Another holder that happens to share our process start time (to the clock tick) is still another holder."""
    _, _, our_start = procs.identity()
    put_lease(board, host="elsewhere", pid=sleeper.pid, started=our_start, age=1.0)
    lease = leases.read_lease(board)
    assert lease is not None and not lease.is_mine()
    with pytest.raises(LeaseHeld):
        leases.acquire(board, grace=GRACE)


def test_a_lease_record_is_immutable() -> None:
    lease = leases.DispatcherLease("h", 1, None, 3, acquired_at=100.0, refreshed_at=200.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lease.epoch = 4  # type: ignore[misc]


def test_break_lock_never_removes_a_lease_refreshed_ahead_of_our_clock(board: Board) -> None:
    """Age 0 (refreshed in our future) is not older than a max age of 0: the lease is live."""
    put_lease(board, host="elsewhere", pid=4242, started=123.0, age=-60.0)
    with pytest.raises(LeaseHeld, match="younger than --max-age 0s"):
        leases.break_lock(board, max_age=0)
    assert leases.read_lease(board) is not None
