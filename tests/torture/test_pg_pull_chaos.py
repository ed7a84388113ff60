"""Multi-host chaos on one PostgreSQL board (issue 13's must-show), bounded, with real parts only.

Three hosts are network namespaces joined by veth pairs to a bridge; PostgreSQL listens on the bridge. Each host has
its own HERMES_HOME and pull workers (tests/torture/fleet_worker.py) serving 500 tasks of one board. During the run:
workers SIGKILLed at random (and restarted), workers SIGSTOPped past their lease and continued, one host cut off
(link down) for 20 s and reconnected, every backend connection killed with pg_terminate_backend, and PostgreSQL
restarted once. Then each host runs `reconcile-completions --apply` for the reports it spooled while cut off.

Invariants: 0 tasks lost (all 500 done), every task completed by exactly one run, 0 stale completions accepted (a
worker told "accepted" always holds the run that completed the task), never two open runs for one task (watched
throughout), and every spooled report accounted for by reconcile (applied, skipped with a reason, or a conflict).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.store.pg.database import schema_name
from hermes_cli.kanban.store.pg.server import ThrowawayServer

from .netns import Fleet

pytestmark = pytest.mark.slow

HOSTS = 3
WORKERS_PER_HOST = 2
TASKS = 500
TTL_S = 3.0
CUT_S = 20.0
WORKER = str(Path(__file__).with_name("fleet_worker.py"))


class Host:
    def __init__(self, fleet: Fleet, i: int, root: Path, url: str) -> None:
        self.fleet, self.i = fleet, i
        self.home = root / f"host{i}"
        self.home.mkdir()
        self.log = root / f"host{i}.jsonl"
        self.stop_file = root / "stop"
        self.env = {**os.environ, "HERMES_HOME": str(self.home), "HERMES_KANBAN_URL": url,
                    "HERMES_KANBAN_PG_CONNECT_TIMEOUT": "2", "PYTHONPATH": os.getcwd()}
        self.workers: list[subprocess.Popen[str]] = []

    def start_worker(self, n: int) -> subprocess.Popen[str]:
        return self.fleet.popen(self.i, [sys.executable, WORKER, str(self.log), str(self.stop_file),
                                         f"h{self.i}w{n}", str(TTL_S)], env=self.env)

    def hermes(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.fleet.run(self.i, [sys.executable, "-m", "hermes_cli.main", "kanban", *args],
                              env=self.env, capture_output=True, timeout=120)


def _outcomes(hosts: list[Host]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for h in hosts:
        if h.log.exists():
            out += [json.loads(line) for line in h.log.read_text().splitlines() if line.strip()]
    return out


def test_a_fleet_of_three_hosts_survives_kills_stops_a_partition_and_a_server_restart(tmp_path: Path) -> None:
    rng = random.Random(1313)
    with Fleet(HOSTS) as fleet, ThrowawayServer(listen=fleet.server_ip, fsync=False) as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE fleet")
        url = server.url_for("fleet")
        os.environ["HERMES_KANBAN_URL"] = url
        try:
            with Board.open() as board:
                for i in range(TASKS):
                    board.create_task(f"job {i}", max_retries=100)
        finally:
            del os.environ["HERMES_KANBAN_URL"]
        hosts = [Host(fleet, i, tmp_path, url) for i in range(HOSTS)]

        # Watch for two open runs of one task, all along (from the root namespace, through every restart).
        doubles: list[object] = []
        watching = threading.Event()
        watching.set()

        def watch() -> None:
            while watching.is_set():
                try:
                    with psycopg.connect(url, connect_timeout=2) as c:
                        while watching.is_set():
                            doubles.extend(c.execute(
                                f'SELECT task_id, count(*) FROM "{schema_name("default")}".runs WHERE ended_at IS NULL '
                                "GROUP BY task_id HAVING count(*) > 1").fetchall())
                            c.commit()
                            time.sleep(0.1)
                except psycopg.Error:
                    time.sleep(0.2)  # the server is restarting or our backend was terminated: look again

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for h in hosts:
                h.workers = [h.start_worker(n) for n in range(WORKERS_PER_HOST)]
            kills = stops = 0
            started = time.monotonic()
            cut_host = 2
            events = {"cut": 3.0, "heal": 3.0 + CUT_S, "terminate": 8.0, "restart": 14.0}
            done_events: set[str] = set()
            stopped: list[tuple[float, subprocess.Popen[str]]] = []
            while time.monotonic() - started < 32:
                t = time.monotonic() - started
                for name, at in events.items():
                    if t >= at and name not in done_events:
                        done_events.add(name)
                        if name == "cut":
                            fleet.cut(cut_host)
                        elif name == "heal":
                            fleet.heal(cut_host)
                        elif name == "terminate":
                            with psycopg.connect(url, autocommit=True) as c:
                                c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                          "WHERE datname = 'fleet' AND pid <> pg_backend_pid()")
                        elif name == "restart":
                            server.restart("fast")
                for at, proc in list(stopped):
                    if time.monotonic() >= at:
                        os.kill(proc.pid, signal.SIGCONT)
                        stopped.remove((at, proc))
                h = hosts[rng.randrange(HOSTS)]
                n = rng.randrange(WORKERS_PER_HOST)
                proc = h.workers[n]
                if any(p is proc for _, p in stopped):
                    time.sleep(0.5)
                    continue
                if rng.random() < 0.5:
                    proc.kill()
                    proc.wait()
                    h.workers[n] = h.start_worker(n)
                    kills += 1
                else:
                    os.kill(proc.pid, signal.SIGSTOP)  # past its lease: another worker takes the task over
                    stopped.append((time.monotonic() + TTL_S + 2.0, proc))
                    stops += 1
                time.sleep(rng.uniform(0.8, 1.6))
            for _, proc in stopped:
                os.kill(proc.pid, signal.SIGCONT)
            assert {"cut", "heal", "terminate", "restart"} <= done_events
            assert kills >= 5 and stops >= 5, (kills, stops)

            # Every host reconciles what it spooled; then the fleet finishes the rest.
            records: list[dict[str, object]] = []
            deadline = time.monotonic() + 150
            while True:
                for h in hosts:
                    p = h.hermes("reconcile-completions", "--apply", "--json")
                    assert p.returncode in (0, 3), p.stderr
                    records += json.loads(p.stdout)["records"]
                with _board(url) as board:
                    counts = board.counts()
                if counts["done"] == TASKS:
                    break
                assert time.monotonic() < deadline, f"tasks not all done: {counts}"
                time.sleep(2)
        finally:
            (tmp_path / "stop").write_text("stop")
            for h in hosts:
                for proc in h.workers:
                    try:
                        os.kill(proc.pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                for proc in h.workers:
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            watching.clear()
            watcher.join(timeout=10)

        # A last reconcile for reports spooled after the previous one.
        for h in hosts:
            p = h.hermes("reconcile-completions", "--apply", "--json")
            assert p.returncode in (0, 3), p.stderr
            records += json.loads(p.stdout)["records"]

        outcomes = _outcomes(hosts)
        with _board(url) as board:
            runs = board.db.rows("SELECT id, task_id, outcome FROM runs")
            statuses = {r["id"]: r["status"] for r in board.db.rows("SELECT id, status FROM tasks")}
            reconciled = board.db.rows("SELECT task_id, run_id FROM events WHERE kind = 'reconciled'")
        completing: dict[str, int] = {}
        for r in runs:
            if r["outcome"] == "completed":
                assert r["task_id"] not in completing, f"task {r['task_id']} was completed by two runs"
                completing[r["task_id"]] = r["id"]
        late = {(e["task_id"], e["run_id"]) for e in reconciled}

        assert len(statuses) == TASKS and set(statuses.values()) == {"done"}, "a task was lost"
        for task_id in statuses:
            assert task_id in completing or any(t == task_id for t, _ in late), f"{task_id} has no completing run"
        stale_accepted = [o for o in outcomes if o["outcome"] == "accepted"
                          and completing.get(str(o["task"])) != o["run"]]
        assert stale_accepted == [], f"stale completions accepted: {stale_accepted[:5]}"
        assert doubles == [], f"two open runs for one task: {doubles[:5]}"
        spooled = {(o["task"], o["run"]) for o in outcomes if o["outcome"] == "spooled"}
        accounted = {(r["task_id"], r["run_id"]) for r in records if r.get("proposed_action")}
        assert spooled <= accounted, f"spooled reports never reconciled: {sorted(spooled - accounted)[:5]}"
        errors = [o for o in outcomes if o["outcome"] == "error"]
        assert errors == [], errors[:5]
        print(f"\nchaos: {kills} kills, {stops} stops, {len(spooled)} spooled reports, "
              f"{sum(1 for o in outcomes if o['outcome'] == 'stale')} stale reports refused")


class _board:
    """Board.open on the fleet's URL from the test process (HERMES_KANBAN_URL set only while it is open)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> Board:
        os.environ["HERMES_KANBAN_URL"] = self.url
        self.board = Board.open()
        return self.board

    def __exit__(self, *exc: object) -> None:
        self.board.close()
        del os.environ["HERMES_KANBAN_URL"]
