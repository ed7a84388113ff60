"""Eight real processes create, claim and complete 2,000 tasks on one board at the same time.

Each process creates its share (every 10th task a child of its previous one, so promotion runs under contention)
and, between creates and afterwards, claims the next ready task and completes it with the run id it was given. A
few creates, claims and completions go through the real `hermes` console script instead of the API. Every process
logs each acknowledged claim and completion (task id, run id) to its own file. Checked afterwards:
- every task is done exactly once: one run per task, closed `completed`, one `completed` event;
- no run is lost: the logged acknowledgements are exactly the runs table (no run without its report, no report
  without its run), and every claim a process was given it also completed;
- children ran only after their parent was done;
- `integrity_check` and `foreign_key_check` are clean;
- no `database is locked` / BoardBusy reached a caller: the processes count every BoardBusy they caught and every
  stderr line of theirs and of their CLI calls; the target is 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import apsw
import pytest

PROCS = 8
TASKS = 2000
#: one create in CLI_EVERY and one claim+complete in CLI_EVERY go through the console script
CLI_EVERY = 50

WORKER = r"""
import json, os, subprocess, sys, time
from hermes_cli.kanban import Board, BoardBusy
from hermes_cli.kanban.live.doorbell import Doorbell

idx, n_create, total, db, log_path, hermes, cli_every = (
    int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7]))
env = {**os.environ, "HERMES_KANBAN_DB": db}
log = open(log_path, "w", buffering=1)
busy = 0
cli_calls = 0
NOTHING_READY = "error: no ready task to claim (see: hermes kanban list --status ready)\n"


def note(**kw):
    log.write(json.dumps(kw) + "\n")


def cli(*args):
    global cli_calls
    cli_calls += 1
    p = subprocess.run([hermes, "kanban", *args, "--json"], capture_output=True, text=True, env=env, timeout=60)
    if args[0] == "claim" and p.returncode == 1 and p.stderr == NOTHING_READY:
        return None
    if p.returncode != 0 or p.stderr:
        note(cli_error=[list(args), p.returncode, p.stderr])
        return None
    return json.loads(p.stdout)


def api(fn, *args, **kw):
    # BoardBusy reaching us means the store's own retry budget ran out: count it (the target is 0), then retry.
    global busy
    while True:
        try:
            return fn(*args, **kw)
        except BoardBusy as exc:
            busy += 1
            note(busy=str(exc))


board = Board.open(db_path=db)
bell = Doorbell(board.paths.notify_dir, f"worker{idx}")
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.readline()  # start together

n_work = 0


def work_one():
    global n_work
    n_work += 1
    if n_work % cli_every == 0:
        c = cli("claim")
        if c is None:
            return False
        note(claimed=c["task_id"], run=c["run_id"], via="cli")
        done = cli("complete", c["task_id"], "--run-id", str(c["run_id"]), "--summary", f"p{idx}")
        if done is not None and done["status"] == "done":
            note(completed=c["task_id"], run=c["run_id"], via="cli")
        return True
    c = api(board.claim, worker=f"p{idx}")
    if c is None:
        return False
    note(claimed=c.task_id, run=c.run_id, via="api")
    t = api(board.complete, c.task_id, c.run_id, summary=f"p{idx}")
    if t.status == "done":
        note(completed=c.task_id, run=c.run_id, via="api")
    return True


last = None
for i in range(n_create):
    parents = [last] if (i % 10 == 9 and last) else []
    if i % cli_every == cli_every - 1:
        args = ["create", f"p{idx}-{i}"] + [a for p in parents for a in ("--parent", p)]
        t = cli(*args)
        task_id = t["id"] if t else None
    else:
        task_id = api(board.create_task, f"p{idx}-{i}", parents=parents, idempotency_key=f"p{idx}-{i}")[0].id
    if task_id:
        note(created=task_id, parents=parents)
        last = task_id
    work_one()

deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    if work_one():
        continue
    if board.counts()["done"] >= total:
        break
    bell.wait(0.2)  # woken by the next commit anywhere on the board (a lost ring costs 0.2 s, never a task)

bell.close()
board.close()
note(finished=True, busy=busy, cli_calls=cli_calls)
"""


@pytest.mark.slow
def test_eight_processes_two_thousand_tasks_each_done_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "board" / "kanban.db"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    hermes = str(Path(sys.executable).with_name("hermes"))
    share = TASKS // PROCS
    procs = []
    for i in range(PROCS):
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(i), str(share), str(TASKS), str(db), str(tmp_path / f"p{i}.log"),
             hermes, str(CLI_EVERY)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    for p in procs:  # every process has opened the board (the first one created it) before any starts working
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=240) for p in procs]
    for i, (p, (_, err)) in enumerate(zip(procs, results, strict=True)):
        assert (p.returncode, err) == (0, ""), f"process {i}: exit {p.returncode}\n{err}"

    logs = [[json.loads(line) for line in (tmp_path / f"p{i}.log").read_text().splitlines()] for i in range(PROCS)]
    entries = [e for log in logs for e in log]
    finished = [e for e in entries if "finished" in e]
    assert len(finished) == PROCS
    assert [e for e in entries if "cli_error" in e] == []
    assert sum(e["busy"] for e in finished) == 0, [e for e in entries if "busy" in e and "finished" not in e]
    assert sum(e["cli_calls"] for e in finished) > 0

    created = [e["created"] for e in entries if "created" in e]
    claimed = [(e["claimed"], e["run"]) for e in entries if "claimed" in e]
    completed = [(e["completed"], e["run"]) for e in entries if "completed" in e]
    assert len(created) == len(set(created)) == TASKS
    assert Counter(claimed) == Counter(completed), "a claim a process was given was never completed"
    assert len(completed) == len(set(completed)) == TASKS
    assert {t for t, _ in completed} == set(created)
    assert {e["via"] for e in entries if "completed" in e} == {"api", "cli"}

    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        statuses = dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
        assert statuses == {"done": TASKS}
        runs = conn.execute("SELECT task_id, id, outcome, ended_at IS NOT NULL FROM runs").fetchall()
        assert sorted((t, r) for t, r, _, _ in runs) == sorted(completed)  # one run per task, each acknowledged
        assert {(o, ended) for _, _, o, ended in runs} == {("completed", 1)}
        events = dict(conn.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
        assert (events["created"], events["claimed"], events["completed"]) == (TASKS, TASKS, TASKS)
        per_task = conn.execute(
            "SELECT task_id, count(*) FROM events WHERE kind = 'completed' GROUP BY task_id HAVING count(*) != 1"
        ).fetchall()
        assert per_task == []
        late_children = conn.execute(
            "SELECT c.id FROM links l JOIN tasks p ON p.id = l.parent_id JOIN runs r ON r.task_id = l.child_id "
            "JOIN tasks c ON c.id = l.child_id WHERE r.started_at < p.completed_at"
        ).fetchall()
        assert late_children == []
        assert conn.execute("SELECT count(*) FROM links").fetchall()[0][0] >= TASKS // 10 - PROCS
    finally:
        conn.close()
