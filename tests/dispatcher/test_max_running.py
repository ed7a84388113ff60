"""The board-wide limit `max_running` (config [dispatch]): tasks running at once on the whole board, counted in the
claim's own transaction, on either engine. tests/dispatcher/test_pg_fleet.py holds it across three dispatcher
processes on one PostgreSQL board."""

from __future__ import annotations

from hermes_cli.kanban import Board

from .conftest import configure, dispatch, pycmd, runs_of


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    most = now = 0
    for _, step in points:
        now += step
        most = max(most, now)
    return most


def test_max_running_caps_the_tasks_running_at_once_below_max_spawn(engine: str, board: Board) -> None:
    configure(board, max_spawn=4, max_running=2, backup_interval="off")
    ids = [board.create_task(f"t{i}", command=pycmd("import time; time.sleep(0.3)"))[0].id for i in range(6)]
    res = dispatch(board, timeout=60)
    assert res.error is None and res.counts["completed"] == 6, res.as_dict()
    runs = [r for t in ids for r in runs_of(board, t)]
    assert [str(r.outcome) for r in runs] == ["completed"] * 6
    assert most_at_once([(r.started_at, r.ended_at) for r in runs]) == 2
