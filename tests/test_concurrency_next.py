"""Exactly once with `complete --next`: four real processes burn one board, each completing its task and claiming
the next in one transaction (`Board.complete_next`; every 25th step through the real `hermes kanban complete
--next --json` instead of the API). Every process logs each acknowledged claim (task id, run id). Checked
afterwards:
- every task is done exactly once: one run per task, closed `completed`, one `claimed` and one `completed` event;
- no claim is lost or duplicated: the logged claims are exactly the runs table, and no run is given to two processes;
- `integrity_check` is clean and no BoardBusy reached a caller.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import apsw

from .startgate import release_together

PROCS = 4
TASKS = 400
CLI_EVERY = 25

WORKER = r"""
import json, os, subprocess, sys
from hermes_cli.kanban import Board, BoardBusy

db, log_path, hermes, cli_every = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
env = {**os.environ, "HERMES_KANBAN_DB": db}
log = open(log_path, "w", buffering=1)
board = Board.open(db_path=db)
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.readline()  # start together

def note(**kw):
    log.write(json.dumps(kw) + "\n")

busy = 0
claim = board.claim(worker=f"w{os.getpid()}", ttl=600)
steps = 0
while claim is not None:
    note(claimed=[claim.task_id, claim.run_id])
    steps += 1
    if steps % cli_every == 0:
        p = subprocess.run([hermes, "kanban", "complete", claim.task_id, "--run-id", str(claim.run_id), "--next",
                            "--ttl", "600s", "--json"], capture_output=True, text=True, env=env, timeout=120)
        if p.returncode != 0 or p.stderr:
            note(cli_error=[p.returncode, p.stderr])
            break
        out = json.loads(p.stdout)
        note(completed=[out["completed"]["id"], claim.run_id])
        nxt = out["next"]
        claim = None if nxt is None else type(claim)(nxt["task_id"], nxt["run_id"], 0.0, nxt["attempt"])
        continue
    while True:
        try:
            done, nxt = board.complete_next(claim.task_id, claim.run_id, worker=f"w{os.getpid()}", ttl=600)
            break
        except BoardBusy:
            busy += 1
    note(completed=[done.id, claim.run_id])
    claim = nxt
note(busy=busy)
board.close()
"""


def test_complete_next_is_exactly_once_across_processes(tmp_path: Path) -> None:
    from hermes_cli.kanban import Board

    db = tmp_path / "board.db"
    with Board.open(db_path=str(db)) as b:
        def seed() -> None:
            for i in range(TASKS):
                b.create_task(f"task {i}", priority=i % 5)

        b.db.write(seed)
    hermes = str(Path(sys.executable).with_name("hermes"))
    logs = [tmp_path / f"w{k}.log" for k in range(PROCS)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(db), str(log), hermes, str(CLI_EVERY)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for log in logs]
    release_together(procs)
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err

    claimed: list[tuple[str, int]] = []
    completed: list[tuple[str, int]] = []
    busy = 0
    for log in logs:
        mine_claimed, mine_completed = [], []
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            assert "cli_error" not in rec, rec
            if "claimed" in rec:
                mine_claimed.append(tuple(rec["claimed"]))
            elif "completed" in rec:
                mine_completed.append(tuple(rec["completed"]))
            else:
                busy += rec["busy"]
        assert mine_claimed == mine_completed  # every claim a process was given, it completed itself
        claimed += mine_claimed
        completed += mine_completed
    assert busy == 0
    assert len(claimed) == TASKS and len(set(claimed)) == TASKS
    assert len({t for t, _ in claimed}) == TASKS

    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        statuses = Counter(s for (s,) in conn.execute("SELECT status FROM tasks"))
        assert statuses == {"done": TASKS}
        runs = sorted(conn.execute("SELECT task_id, id FROM runs WHERE outcome = 'completed' AND ended_at IS NOT NULL"))
        assert runs == sorted(claimed)
        assert conn.execute("SELECT count(*) FROM runs").fetchall() == [(TASKS,)]
        events = Counter(conn.execute("SELECT kind, task_id FROM events WHERE kind IN ('claimed', 'completed')"))
        assert set(events.values()) == {1} and len(events) == 2 * TASKS
    finally:
        conn.close()
