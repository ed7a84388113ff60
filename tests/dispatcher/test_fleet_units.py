"""The fleet's registration rules on a PostgreSQL board (dispatch/fleet.py, store/pg/dispatchers.py), one by one.
The processes-and-signals versions are in test_pg_fleet.py (slow)."""

from __future__ import annotations

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.dispatch import fleet
from hermes_cli.kanban.store.pg import dispatchers as sql


def age_registration(board: Board, dispatcher_id: int, seconds: float) -> None:
    """Move a registration's heartbeat `seconds` into the past (by the server's clock)."""
    board.db.write(lambda: board.db.execute("UPDATE dispatchers SET heartbeat_at = heartbeat_at - ? WHERE id = ?",
                                            (seconds, dispatcher_id)))


def test_registrations_get_new_ids_and_heartbeat_by_the_servers_clock(pg_url: str) -> None:
    with Board.open() as board:
        assert fleet.is_fleet(board)
        a = fleet.register(board, lease_s=5)
        b = fleet.register(board, lease_s=5)
        assert b.id > a.id
        before = sql.get(board.db, a.id)
        assert before is not None
        held, removed = fleet.beat(board, a.id)
        after = sql.get(board.db, a.id)
        assert held and removed == [] and after is not None
        assert after["heartbeat_at"] >= before["heartbeat_at"]
        assert abs(after["heartbeat_at"] - board.db.clock()) < 5  # the server's clock, not a constant
        kinds = [e.kind for e in board.events(kinds=["dispatcher_started"])]
        assert kinds == ["dispatcher_started", "dispatcher_started"]


def test_a_lapsed_registration_is_removed_by_the_next_beat_and_its_owner_finds_out(pg_url: str) -> None:
    with Board.open() as board:
        a = fleet.register(board, lease_s=5)
        b = fleet.register(board, lease_s=5)
        age_registration(board, a.id, 4)
        assert fleet.beat(board, b.id) == (True, [])  # 4 s silent, lease 5 s: still there
        age_registration(board, a.id, 2)
        held, removed = fleet.beat(board, b.id)
        assert held and [r["id"] for r in removed] == [a.id]
        stopped = board.events(kinds=["dispatcher_stopped"])
        assert [(e.payload["dispatcher_id"], e.payload["reason"]) for e in stopped] == [(a.id, "lapsed")]
        assert fleet.beat(board, a.id) == (False, [])
        with pytest.raises(fleet.RegistrationLost):
            board.db.write(lambda: fleet.check_registered(board, a.id))
        board.db.write(lambda: fleet.check_registered(board, b.id))  # b is fine


def test_a_dispatcher_never_removes_its_own_registration_as_lapsed(pg_url: str) -> None:
    with Board.open() as board:
        a = fleet.register(board, lease_s=1)
        age_registration(board, a.id, 10)
        held, removed = fleet.beat(board, a.id)
        assert held and removed == []


def test_foreign_runs_are_the_open_runs_of_other_registered_dispatchers(pg_url: str) -> None:
    with Board.open() as board:
        a = fleet.register(board, lease_s=5)
        b = fleet.register(board, lease_s=5)
        t1, _ = board.create_task("one")
        t2, _ = board.create_task("two")
        t3, _ = board.create_task("three")
        c1 = board.claim(t1.id, worker="a")
        c2 = board.claim(t2.id, worker="b")
        c3 = board.claim(t3.id, worker="pull")  # a pull worker's claim: nobody's
        assert c1 and c2 and c3
        board.db.write(lambda: fleet.own_run(board, c1.run_id, a.id))
        board.db.write(lambda: fleet.own_run(board, c2.run_id, b.id))
        assert fleet.foreign_runs(board, a.id) == {c2.run_id}
        assert fleet.foreign_runs(board, b.id) == {c1.run_id}
        assert fleet.unregister(board, b.id, reason="test")
        assert fleet.foreign_runs(board, a.id) == set()  # b is gone: its runs are no longer foreign
        # registering anew carries the open runs along
        a2 = fleet.register(board, lease_s=5, previous=a.id)
        assert fleet.foreign_runs(board, b.id) == {c1.run_id}
        rows = board.db.rows("SELECT dispatcher_id FROM runs WHERE id = ?", (c1.run_id,))
        assert rows == [{"dispatcher_id": a2.id}]


def test_at_limit_counts_every_running_task_of_the_board(pg_url: str) -> None:
    with Board.open() as board:
        ids = [board.create_task(f"t{i}")[0].id for i in range(3)]
        board.claim(ids[0], worker="x")
        board.claim(ids[1], worker="y")
        assert not fleet.at_limit(board, None)
        assert not fleet.at_limit(board, 3)
        assert fleet.at_limit(board, 2)
