"""EventReader and subscriptions through the API: cursors, catch-up, kinds, batches, lost doorbells."""

from __future__ import annotations

import os
import threading

import pytest

from hermes_cli.kanban import Board, InvalidValue, NotFound
from hermes_cli.kanban.live.readers import (
    EventReader,
    ack,
    get_subscription,
    list_subscriptions,
    missed_summary,
    parse_kinds,
    subscribe,
    unsubscribe,
)

from .conftest import fifos, ids


def test_a_new_reader_starts_at_the_newest_event_and_sees_what_follows(board: Board) -> None:
    board.create_task("before")
    with EventReader(board, name="t") as reader:
        assert reader.poll() == []
        task, _ = board.create_task("after")
        events = reader.wait(5)
        assert [(e.kind, e.task_id) for e in events] == [("created", task.id)]
        assert reader.wait(0) == []


def test_after_replays_from_a_cursor(board: Board) -> None:
    for i in range(3):
        board.create_task(f"t{i}")
    with EventReader(board, after=1) as reader:
        assert ids(reader.poll()) == [2, 3]


def test_a_behind_reader_catches_up_in_batches_without_waiting(board: Board) -> None:
    for i in range(25):
        board.create_task(f"t{i}")
    with EventReader(board, after=0, batch=10) as reader:
        got = [ids(reader.wait(60)) for _ in range(3)]
        assert got == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
        assert not reader.behind


def test_kinds_filter_moves_the_cursor_past_other_kinds(board: Board) -> None:
    task, _ = board.create_task("x")
    board.comment(task.id, "noise")
    with EventReader(board, after=0, kinds="completed") as reader:
        assert reader.poll() == []
        assert reader.cursor == board.last_event_id()
        board.complete(task.id, summary="ok")
        assert [e.kind for e in reader.wait(5)] == ["completed"]


def test_a_lost_doorbell_costs_latency_not_the_event(board: Board) -> None:
    with EventReader(board) as reader:
        assert reader.poll() == []  # caught up: the next wait really waits
        os.unlink(reader.doorbell.path)  # every ring from now on misses this reader
        task, _ = board.create_task("quiet")
        # The ring is lost; the idle re-read (the timeout) still finds the event, and the FIFO is re-published.
        assert [e.task_id for e in reader.wait(0.05)] == [task.id]
        assert reader.doorbell.healthy()
        board.create_task("heard again")
        assert reader.doorbell.wait(5)


def test_reader_closes_its_fifo(board: Board) -> None:
    with EventReader(board, name="t"):
        assert len(fifos(board.paths.notify_dir)) == 1
    assert fifos(board.paths.notify_dir) == []


def test_reader_in_another_thread_is_woken_by_a_writer_in_this_one(board: Board) -> None:
    seen: list[str] = []
    started = threading.Event()

    def follow() -> None:
        with Board.open() as own, EventReader(own, kinds="completed") as reader:
            started.set()
            while not seen:
                seen.extend(e.task_id or "" for e in reader.wait(30))

    t = threading.Thread(target=follow)
    t.start()
    assert started.wait(30)
    task, _ = board.create_task("x")
    board.complete(task.id)
    t.join(60)
    assert seen == [task.id]


# -- subscriptions --------------------------------------------------------------------------------------------------
def test_subscribe_starts_at_the_newest_event_and_persists_the_cursor(board: Board) -> None:
    board.create_task("old news")
    sub, created = subscribe(board, "pager", kinds="completed,blocked")
    assert created and sub.cursor == board.last_event_id() and sub.kinds == ("completed", "blocked")
    task, _ = board.create_task("x")
    board.complete(task.id, summary="done")
    with EventReader(board, subscription="pager") as reader:
        events = reader.poll()
        assert [e.kind for e in events] == ["completed"]
        reader.ack()
    assert get_subscription(board, "pager").cursor == board.last_event_id()
    with EventReader(board, subscription="pager") as again:
        assert again.poll() == []  # resumes after what was acknowledged


def test_subscribe_again_keeps_the_cursor_and_replaces_kinds(board: Board) -> None:
    first, _ = subscribe(board, "s")
    board.create_task("x")
    same, created = subscribe(board, "s")
    assert not created and same.cursor == first.cursor and same.kinds is None
    changed, created = subscribe(board, "s", kinds=["gave_up"])
    assert not created and changed.cursor == first.cursor and changed.kinds == ("gave_up",)


def test_subscribe_after_zero_replays_everything(board: Board) -> None:
    board.create_task("x")
    sub, _ = subscribe(board, "all", after=0)
    with EventReader(board, subscription="all") as reader:
        assert ids(reader.poll())[0] == 1
    assert sub.cursor == 0


def test_ack_never_moves_a_cursor_back(board: Board) -> None:
    subscribe(board, "s", after=0)
    for i in range(3):
        board.create_task(f"t{i}")
    assert ack(board, "s", 3) == 3
    assert ack(board, "s", 1) == 3
    assert get_subscription(board, "s").cursor == 3


def test_list_counts_pending_events_per_subscription(board: Board) -> None:
    subscribe(board, "b-all", after=0)
    subscribe(board, "a-done", kinds="completed", after=0)
    task, _ = board.create_task("x")
    board.complete(task.id)
    subs = {s.name: s for s in list_subscriptions(board)}
    assert list(subs) == ["a-done", "b-all"]
    assert subs["a-done"].pending == 1
    assert subs["b-all"].pending == board.last_event_id()


def test_unsubscribe_and_its_errors(board: Board) -> None:
    subscribe(board, "s")
    assert unsubscribe(board, "s").name == "s"
    with pytest.raises(NotFound, match=r"^subscription s not found \(see: hermes kanban notify-list\)$"):
        unsubscribe(board, "s")
    with pytest.raises(NotFound, match="subscription s was removed while in use"):
        ack(board, "s", 1)


def test_subscribe_and_unsubscribe_are_events(board: Board) -> None:
    subscribe(board, "s", kinds="completed")
    unsubscribe(board, "s")
    events = board.events(0)
    assert [(e.kind, e.payload) for e in events] == [
        ("subscribed", {"name": "s", "kinds": ["completed"]}),
        ("unsubscribed", {"name": "s"}),
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "invalid subscription name '': use 1-64 chars of a-z, 0-9, '_', '.', ':' or '-', starting with a "
             "letter or digit"),
        ("Bad Name", "invalid subscription name 'Bad Name': use 1-64 chars of a-z, 0-9, '_', '.', ':' or '-', "
                     "starting with a letter or digit"),
        ("x" * 65, f"invalid subscription name '{'x' * 65}': use 1-64 chars of a-z, 0-9, '_', '.', ':' or '-', "
                   "starting with a letter or digit"),
    ],
)
def test_bad_subscription_names_change_nothing(board: Board, name: str, message: str) -> None:
    before = board.last_event_id()
    with pytest.raises(InvalidValue) as err:
        subscribe(board, name)
    assert err.value.message == message
    assert board.last_event_id() == before and list_subscriptions(board) == []


def test_kinds_are_validated() -> None:
    assert parse_kinds(" completed, blocked ,completed") == ("completed", "blocked")
    assert parse_kinds("") is None and parse_kinds(None) is None
    with pytest.raises(InvalidValue, match=r"^invalid event kind 'DROP TABLE': use one of created, commented, "):
        parse_kinds("completed,DROP TABLE")
    with pytest.raises(InvalidValue, match=r"^invalid event kind 'complete': use one of "):
        parse_kinds("complete")  # well-formed but unknown: a typo would filter out everything


def test_missed_summary_counts_without_replaying(board: Board) -> None:
    start = board.last_event_id()
    made = [board.create_task(f"t{i}")[0] for i in range(8)]
    for t in made[:6]:
        board.complete(t.id, summary=f"s-{t.id}")
    board.block(made[6].id, reason="why")
    counts, recent = missed_summary(board, start, board.last_event_id(), recent=3)
    assert counts == {"completed": 6, "blocked": 1}
    assert [(e.kind, e.task_id) for e in recent] == [
        ("completed", made[4].id), ("completed", made[5].id), ("blocked", made[6].id)]
