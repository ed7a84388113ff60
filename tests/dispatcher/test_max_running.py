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


def test_per_assignee_max_running_caps_each_assignee_and_leaves_the_others_free(engine: str, board: Board) -> None:
    """`[profiles.<name>] max_running`: an assignee's tasks running at once on the whole board, counted in the claim's
    transaction like max_running; a limited assignee's queue never holds back another's tasks."""
    configure(board, max_spawn=4, backup_interval="off")
    work = pycmd("import time; time.sleep(0.5)")
    with board.paths.config_file.open("a", encoding="utf-8") as f:
        f.write(f'[profiles.researcher]\nmax_running = 1\n[profiles.writer]\ncommand = "{work}"\nmax_running = 2\n')
    # researchers (their own --command, a limit only in their profile), then writers (the profile's command), then
    # unassigned tasks: the queue order puts every limited task ahead of the free ones
    ids = {"researcher": [board.create_task(f"r{i}", command=work, assignee="researcher")[0].id for i in range(3)],
           "writer": [board.create_task(f"w{i}", assignee="writer")[0].id for i in range(4)],
           None: [board.create_task(f"u{i}", command=work)[0].id for i in range(3)]}
    res = dispatch(board, timeout=90)
    assert res.error is None and res.counts["completed"] == 10, res.as_dict()
    spans = {who: [(r.started_at, r.ended_at) for t in tids for r in runs_of(board, t)] for who, tids in ids.items()}
    assert all(len(s) == len(ids[who]) for who, s in spans.items()), spans  # one run each: nothing crashed
    assert most_at_once(spans["researcher"]) == 1
    assert most_at_once(spans["writer"]) == 2
    # the free tasks ran beside the limited ones (max_spawn 4, at most 3 limited at once): none waited for them all
    assert min(s for s, _ in spans[None]) < max(e for _, e in spans["researcher"])
