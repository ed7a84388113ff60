"""Multi-host chaos on one PostgreSQL board (issue 13's must-show), with dispatchers: test_pg_fleet_chaos_500.

Topology (we are root): a bridge in this namespace holds the server's address; each of three simulated hosts is a
network namespace joined to the bridge by a veth pair, with its own host name (UTS namespace), its own HERMES_HOME
and its own `hermes kanban daemon`, whose workers run on that host. PostgreSQL (a throwaway server for this test)
listens on the bridge address only. 500 tasks on one board; the workers are cheap (`sleep`, or `sleep` then
`hermes kanban complete` for every 4th of the first 240).

During the run: workers SIGKILLed and SIGSTOPped past their lease (SIGCONT later) at random; two dispatchers SIGKILLed
while one of their workers reports for itself, their orphaned workers SIGSTOPped past their lease (so that, on
SIGCONT, they report on runs the other hosts reclaimed: stale reports), and started again; host A cut off
(`ip link set <its veth> down`: silent packet loss, nothing resets) for 20 s and reconnected; every hermes backend
killed with pg_terminate_backend; PostgreSQL restarted once.

Invariants: 0 tasks lost; every task done, exactly once, by an accepted report (a completed run, or a late report the
reconcile applied); 0 stale completions accepted (every `completed` event names the run that completed the task);
never two open runs for one task (watched every 100 ms all along, and from the runs table at the end); host A's
registration lapsed while it was cut off and it registered anew; every report each host spooled reconciled (applied,
filed as skipped, or listed as a conflict), none pending unaccounted, none silently dropped.

Seen failing: without the run-id fencing of `complete` (store's compare-and-set and Board._fenced), "stale completions
accepted: [... 'outcome': 'reclaimed' ...]" in one run, runs left open under done tasks ("assert [{'id': 45, ...
'ended_at': None, ...}] == []") in another; with reconcile-completions applying nothing, "... spool/t_....json is
still pending after reconcile".

Cleanup (namespaces, veths, bridge, the server, every process) runs even when the test fails.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.procs import create_time as proc_started
from hermes_cli.kanban.store.pg.database import schema_name
from hermes_cli.kanban.store.pg.server import ThrowawayServer

pytestmark = pytest.mark.slow

HERMES = str(Path(sys.executable).with_name("hermes"))
CUT_S = 20.0
WORKER_TTL_S = 4.0
SETTINGS = {"poll_interval": "500ms", "kill_grace": "500ms", "lease_grace": "3s", "worker_ttl": f"{WORKER_TTL_S:g}s",
            "max_spawn": 4, "backup_interval": "off"}
#: server-side bounds on a cut-off client's backend (what docs/fleet.md's set-up recommends)
SESSION_SETTINGS = ("idle_in_transaction_session_timeout = '5s'", "tcp_keepalives_idle = 2",
                    "tcp_keepalives_interval = 1", "tcp_keepalives_count = 3",
                    "client_connection_check_interval = '2s'")
CHAOS_TASKS = 500
CHAOS_BUDGET_S = 150.0
#: tasks created after these just sleep (the chaos is over before they run; see chaos_command)
REPORTERS_BEFORE = 240


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=check)


class Net:
    """A bridge and one namespace per host, named after our pid so parallel runs never collide."""

    def __init__(self, hosts: list[str]) -> None:
        tag = os.getpid() % 100000
        # 10.220-249: never the /16s of tests/torture/netns.py (10.213) and tests/hub/test_partition.py (10.214), which
        # pytest-xdist may run at the same time in another worker (each picks its /24 from its pid)
        self.subnet = f"10.{220 + tag % 30}.{tag % 250}"
        self.bridge = f"hk{tag}br"
        self.server_ip = f"{self.subnet}.1"
        self.hosts = hosts
        self.ns = {h: f"hk{tag}{h}" for h in hosts}
        self.veth = {h: f"hk{tag}{h}0" for h in hosts}

    def up(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.server_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i, h in enumerate(self.hosts):
            ns, outer, inner = self.ns[h], self.veth[h], self.veth[h][:-1] + "1"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "link", "set", outer, "master", self.bridge)
            sh("ip", "link", "set", outer, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.subnet}.{10 + i}/24", "dev", inner)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def cut(self, host: str) -> None:
        sh("ip", "link", "set", self.veth[host], "down")

    def heal(self, host: str) -> None:
        sh("ip", "link", "set", self.veth[host], "up")

    def down(self) -> None:
        for h in self.hosts:
            sh("ip", "netns", "del", self.ns[h], check=False)  # takes the inner veth (and so its peer) along
            sh("ip", "link", "del", self.veth[h], check=False)
        sh("ip", "link", "del", self.bridge, check=False)


@pytest.fixture
def net3() -> Iterator[Net]:
    n = Net(["a", "b", "c"])
    try:
        n.up()
        yield n
    finally:
        n.down()


def query(url: str, sql: str, params: tuple[Any, ...] = (), *, attempts: int = 1) -> list[dict[str, Any]]:
    """One query on the board's schema; with `attempts`, retried a second apart while the server restarts."""
    for attempt in range(attempts):
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'SET search_path TO "{schema_name("default")}"')
                cur = conn.execute(sql, params)
                names = [d.name for d in cur.description or []]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except psycopg.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def start_server(net: Net) -> tuple[ThrowawayServer, str]:
    """A throwaway server on the bridge address, with database `chaos` and the session bounds a fleet needs."""
    server = ThrowawayServer(listen=net.server_ip, fsync=False).start()
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "chaos" TEMPLATE template0')
        # A backend whose client was cut off mid-transaction keeps its locks (the board's event lock among them)
        # until it notices: ~2 h by default. Bounded here for every session of the board's database (what
        # docs/fleet.md asks of a deployment; PgDatabase does not set it on its own yet).
        for setting in SESSION_SETTINGS:
            conn.execute(f"ALTER DATABASE chaos SET {setting}")
    return server, server.url_for("chaos")


def start_dispatcher(net: Net, host: str, home: Path, url: str, stderr: Path) -> subprocess.Popen[str]:
    """`hermes kanban daemon` on simulated host `host`: its network namespace, its host name, its HERMES_HOME."""
    board_dir = home / "kanban" / "boards" / "default"
    board_dir.mkdir(parents=True, exist_ok=True)
    lines = ["[dispatch]"] + [f"{k} = {json.dumps(v)}" for k, v in SETTINGS.items()]
    (board_dir / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_KANBAN_URL": url, "HERMES_KANBAN_PG_CONNECT_TIMEOUT": "2"}
    env.pop("HERMES_KANBAN_DB", None)
    argv = ["ip", "netns", "exec", net.ns[host], "unshare", "--uts", "sh", "-c",
            f"hostname chaos-{host} && exec {shlex.quote(HERMES)} kanban daemon --json"]
    with open(stderr, "a", encoding="utf-8") as err:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env)


def reconcile_home(home: Path, url: str) -> str:
    """`reconcile-completions --apply --json` run on one host (its HERMES_HOME): what it printed."""
    env = {**os.environ, "HERMES_HOME": str(home), "HERMES_KANBAN_URL": url}
    rec = subprocess.run([HERMES, "kanban", "reconcile-completions", "--apply", "--json"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert rec.returncode == 0, (rec.stdout, rec.stderr)
    return rec.stdout


def check_invariants(url: str, task_ids: list[str]) -> dict[int, str]:
    """Every task done, once, by an accepted report; nothing open; a task's runs never overlap. Returns outcomes."""
    runs = query(url, "SELECT id, task_id, started_at, ended_at, outcome FROM runs ORDER BY id")
    tasks = {t["id"]: t for t in query(url, "SELECT id, status FROM tasks")}
    late = query(url, "SELECT task_id, run_id, payload FROM events WHERE kind = 'reconciled'")
    assert {t["status"] for t in tasks.values()} == {"done"} and sorted(tasks) == sorted(task_ids)
    assert [r for r in runs if r["ended_at"] is None] == []
    outcome = {r["id"]: r["outcome"] for r in runs}
    for tid in task_ids:
        mine = [r for r in runs if r["task_id"] == tid]
        completed = [r["id"] for r in mine if r["outcome"] == "completed"]
        late_applied = [e["run_id"] for e in late if e["task_id"] == tid
                        and json.loads(e["payload"]).get("report") == "complete"
                        and outcome.get(e["run_id"]) != "completed"]
        assert len(completed) + len(late_applied) == 1, f"{tid}: runs {mine}, late reports {late_applied}"
        for a, b in zip(mine, mine[1:], strict=False):
            assert a["ended_at"] <= b["started_at"], f"{tid}: runs {a['id']} and {b['id']} overlap"
    return outcome


def wait_for(pred: Any, *, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def signal_group(pid: int, sig: int) -> None:
    """Signal a worker's process group (a worker leads its own); gone already is fine."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return


def kill_tree_of_runs(url: str) -> None:
    """Teardown: kill the workers recorded in open runs (each on this machine, whatever its namespace)."""
    try:
        rows = query(url, "SELECT pid FROM runs WHERE pid IS NOT NULL")
    except psycopg.Error:
        return  # the server is already gone: its workers were killed with their groups below
    for r in rows:
        try:
            os.killpg(int(r["pid"]), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


def chaos_command(rng: random.Random, i: int) -> str:
    """Cheap workers, two kinds. Most sleep and exit 0 (their dispatcher records the completion, fenced by the run
    id, and spools it when the board cannot be reached); every 4th of the first REPORTERS_BEFORE (those that run
    while the chaos lasts) reports itself with `hermes kanban complete` (spooled on its host when cut off; refused,
    exit 3, when its run was taken from it meanwhile): a Python process each, the dearest part of the run."""
    if i % 4 == 0 and i < REPORTERS_BEFORE:
        return shlex.join(["sh", "-c", f"sleep {rng.uniform(0.5, 2.0):.2f}; exec {shlex.quote(HERMES)} kanban "
                                       "complete --summary 'own report'"])
    # ~1 s each: 12 slots finish at most ~12 tasks/s however fast the machine, so the last blow (the server restart at
    # 32 s) always meets work left; on a loaded machine the dispatchers' CPU bounds it anyway
    return f"sleep {rng.uniform(0.5, 1.5):.2f}"


def spooled_reports(home: Path, stderr: Path) -> list[Path]:
    """Every report a host says it spooled: its workers' own (`complete` prints where) and its dispatcher's exit 0s."""
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in home.rglob("*.log*") if f.is_file()]
    texts.append(stderr.read_text(encoding="utf-8", errors="replace"))
    return sorted({Path(m) for t in texts for m in re.findall(r"spooled to (/\S+?\.json)", t)})


def check_spool_accounted(spooled: list[Path], reconcile_out: str) -> dict[str, int]:
    """Each spooled report was applied, skipped (its task was done by then), or is listed as a conflict by the last
    reconcile (left for a person): none pending unaccounted, none gone. Returns the count of each."""
    conflicts = {(r["task_id"], r["run_id"]) for r in json.loads(reconcile_out)["records"]
                 if r.get("proposed_action") == "conflict"}
    seen = {"applied": 0, "skipped": 0, "conflict": 0}
    for p in spooled:
        filed = [d for d in ("applied", "skipped") if list((p.parent / d).glob(p.stem + "*.json"))]
        if filed:
            seen[filed[0]] += 1
            continue
        assert p.exists(), f"{p} was spooled, then neither applied nor skipped, and is gone"
        task_id, run_id = p.stem.split(".")[:2]
        assert (task_id, int(run_id)) in conflicts, f"{p} is still pending after reconcile: {reconcile_out[-2000:]}"
        seen["conflict"] += 1
    for d in {p.parent / "invalid" for p in spooled}:
        assert not d.exists() or not any(d.iterdir()), f"invalid reports in {d}"
    return seen


class DoubleRunWatch:
    """Looks for two open runs of one task every 100 ms, from the root namespace, through every restart."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.doubles: list[tuple[Any, ...]] = []
        self.looks = 0
        self.running = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> DoubleRunWatch:
        self.running.set()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running.clear()
        self.thread.join(timeout=10)

    def _watch(self) -> None:
        while self.running.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as c:
                    while self.running.is_set():
                        self.doubles.extend(c.execute(
                            f'SELECT task_id, count(*) FROM "{schema_name("default")}".runs WHERE ended_at IS NULL '
                            "GROUP BY task_id HAVING count(*) > 1").fetchall())
                        self.looks += 1
                        time.sleep(0.1)
            except psycopg.Error:
                time.sleep(0.2)  # the server restarts, or our backend was terminated: look again


def test_pg_fleet_chaos_500(net3: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13's multi-host chaos test: three hosts (network namespaces on a bridge, PostgreSQL on the bridge), each
    with its own dispatcher daemon, workers and HERMES_HOME, 500 tasks on one board. While they run: workers SIGKILLed
    and SIGSTOPped past their lease (SIGCONT later) at random, dispatchers SIGKILLed and started again, host A cut off
    for 20 s and reconnected, every hermes backend killed with pg_terminate_backend, PostgreSQL restarted once.
    Invariants: 0 tasks lost, each done exactly once by an accepted report, 0 stale completions accepted, never two
    open runs of one task (watched all along, and from the runs table), every report spooled on a host reconciled."""
    rng = random.Random(1313)
    started = time.monotonic()
    server, url = start_server(net3)
    procs: dict[str, subprocess.Popen[str]] = {}
    stopped: dict[int, tuple[float, float]] = {}  # SIGSTOPped worker pid -> (SIGCONT due, its start time)
    homes = {h: tmp_path / f"home-{h}" for h in net3.hosts}
    errs = {h: tmp_path / f"dispatcher-{h}.stderr" for h in net3.hosts}
    try:
        monkeypatch.setenv("HERMES_KANBAN_URL", url)
        with Board.open() as board:
            task_ids = [board.create_task(f"task {i}", command=chaos_command(rng, i), max_retries=100)[0].id
                        for i in range(CHAOS_TASKS)]
        with DoubleRunWatch(url) as watch:
            for h in net3.hosts:
                procs[h] = start_dispatcher(net3, h, homes[h], url, errs[h])
            regs = wait_for(lambda: len(r := query(url, "SELECT id, host, pid FROM dispatchers")) == 3 and r,
                            timeout=30, what="three dispatchers registered")
            reg_a = next(r for r in regs if r["host"] == "chaos-a")

            def open_runs() -> list[dict[str, Any]]:
                try:
                    return query(url, "SELECT r.id, r.task_id, r.pid, r.dispatcher_id, t.command LIKE '%%complete%%' "
                                      "AS reports, extract(epoch FROM clock_timestamp()) - r.started_at AS age "
                                      "FROM runs r JOIN tasks t ON t.id = r.task_id "
                                      "WHERE r.ended_at IS NULL AND r.pid IS NOT NULL")
                except psycopg.Error:
                    return []  # restarting: no victim this time

            def done() -> int:
                return int(query(url, "SELECT count(*) AS n FROM tasks WHERE status = 'done'", attempts=30)[0]["n"])

            # The schedule, in seconds after the three registered; workers are hit at random all along.
            t0 = time.monotonic()
            # A killed dispatcher stays down until its orphans' runs were reclaimed by the others (their lease and
            # a poll, with a margin): started sooner, it would adopt them and stop them before they report.
            down = WORKER_TTL_S + 4.0
            plan = [(3.0, "kill dispatcher c"), (6.0, "cut a"), (3.0 + down, "start dispatcher c"),
                    (12.0, "terminate backends"), (16.0, "kill dispatcher b"), (16.0 + down, "start dispatcher b"),
                    (6.0 + CUT_S, "heal a"), (32.0, "restart server")]
            plan.sort()
            happened: dict[str, int] = {}  # what -> tasks done when it happened (the chaos met a busy fleet)
            facts: dict[str, int] = {}
            cut_runs: list[dict[str, Any]] = []
            kills = stops = 0
            try:
                while plan or stopped:
                    now = time.monotonic() - t0
                    while plan and plan[0][0] <= now:
                        _, what = plan.pop(0)
                        happened[what] = done()
                        verb, _, who = what.partition(" ")
                        if what.startswith("kill dispatcher"):
                            # When one of its workers reports for itself (wait a little for one): SIGKILL the
                            # dispatcher and SIGSTOP its orphans past their lease. Their runs are reclaimed by the
                            # others; on SIGCONT a reporter's `complete` names a run taken from it: a stale report.
                            def orphans_to_be(h: str = who[-1]) -> list[dict[str, Any]]:
                                reg = query(url, "SELECT id FROM dispatchers WHERE pid = %s", (procs[h].pid,))
                                mine = [r for r in open_runs() if reg and r["dispatcher_id"] == reg[0]["id"]]
                                # a reporter started just now is still asleep: its report is yet to come
                                return mine if any(r["reports"] and r["age"] < 0.3 for r in mine) else []

                            orphans = wait_for(orphans_to_be, timeout=10,
                                               what=f"a self-reporting worker of host {who[-1]}")
                            procs[who[-1]].kill()
                            procs[who[-1]].communicate(timeout=30)
                            for r in orphans:
                                if (created := proc_started(int(r["pid"]))) is not None:
                                    signal_group(int(r["pid"]), signal.SIGSTOP)
                                    stopped[int(r["pid"])] = (time.monotonic() + WORKER_TTL_S + 3.0, created)
                        elif what.startswith("start dispatcher"):
                            procs[who[-1]] = start_dispatcher(net3, who[-1], homes[who[-1]], url, errs[who[-1]])
                        elif what == "cut a":
                            cut_runs = [r for r in open_runs() if r["dispatcher_id"] == reg_a["id"]]
                            net3.cut("a")
                        elif what == "heal a":
                            facts["a registered at heal"] = len(query(
                                url, "SELECT 1 FROM dispatchers WHERE id = %s", (reg_a["id"],), attempts=5))
                            net3.heal("a")
                        elif what == "terminate backends":
                            facts["terminated"] = query(
                                url, "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                                     "WHERE application_name LIKE 'hermes-kanban%%' AND pid <> pg_backend_pid()",
                                attempts=5)[0]["n"]
                        elif what == "restart server":
                            server.restart("fast")
                    for pid, (due, created) in list(stopped.items()):
                        if time.monotonic() >= due:
                            del stopped[pid]
                            if proc_started(pid) == created:  # still that worker, not a reused pid
                                signal_group(pid, signal.SIGCONT)
                    if plan:
                        victims = [r for r in open_runs() if r["pid"] not in stopped]
                        if victims:
                            pid = int(rng.choice(victims)["pid"])
                            created = proc_started(pid)
                            if created is not None and rng.random() < 0.5:
                                signal_group(pid, signal.SIGKILL)
                                kills += 1
                            elif created is not None:
                                # past its lease: its dispatcher stops extending it, another reclaims the run
                                signal_group(pid, signal.SIGSTOP)
                                stopped[pid] = (time.monotonic() + WORKER_TTL_S + 2.0, created)
                                stops += 1
                    time.sleep(rng.uniform(0.5, 1.0))
            finally:
                net3.heal("a")  # whatever happened above: never leave host A cut off
                for pid, (_, created) in stopped.items():
                    if proc_started(pid) == created:
                        signal_group(pid, signal.SIGCONT)
                stopped.clear()

            wait_for(lambda: done() == CHAOS_TASKS, timeout=max(10.0, CHAOS_BUDGET_S - (time.monotonic() - started)),
                     what=f"all {CHAOS_TASKS} tasks done")
            wait_for(lambda: "registered anew" in errs["a"].read_text(encoding="utf-8"), timeout=30,
                     what="host A's dispatcher registered anew")
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for h, p in procs.items():
            p.communicate(timeout=60)
            assert p.returncode == 0, f"host {h}'s dispatcher exited {p.returncode}: {errs[h].read_text()[-3000:]}"
        reconciled = {h: reconcile_home(homes[h], url) for h in net3.hosts}
        outcome = check_invariants(url, task_ids)
        completions = query(url, "SELECT e.task_id, e.run_id, e.payload, r.outcome FROM events e "
                                 "LEFT JOIN runs r ON r.id = e.run_id WHERE e.kind = 'completed'")
        lapsed = query(url, "SELECT payload FROM events WHERE kind = 'dispatcher_stopped'")
    finally:
        for pid, (_, created) in stopped.items():
            if proc_started(pid) == created:
                signal_group(pid, signal.SIGCONT)
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=30)
        kill_tree_of_runs(url)
        server.stop()

    # 0 stale completions accepted: every completion names the run that completed the task, or is a late report
    # reconcile applied because nothing had happened to its task since (never over another run).
    stale = [c for c in completions if c["outcome"] != "completed" and not json.loads(c["payload"]).get("reconciled")]
    assert stale == [], f"stale completions accepted: {stale[:5]}"
    assert len(completions) == CHAOS_TASKS, "a task was completed twice"
    assert watch.doubles == [], f"two open runs for one task: {watch.doubles[:5]}"
    assert watch.looks > 100, "the watch hardly looked"
    # The cut-off host: its registration removed while cut off, its runs then open reclaimed (or ended by a report
    # that got through first), and everything it spooled reconciled.
    assert any(json.loads(e["payload"]).get("dispatcher_id") == reg_a["id"]
               and json.loads(e["payload"]).get("reason") == "lapsed" for e in lapsed), "host A never lapsed"
    for r in cut_runs:
        assert outcome[r["id"]] in ("reclaimed", "completed", "crashed"), (r, outcome[r["id"]])
    filed = {h: check_spool_accounted(spooled_reports(homes[h], errs[h]), reconciled[h]) for h in net3.hosts}
    assert sum(filed["a"].values()) > 0, "nothing was spooled on the cut-off host: the chaos missed its point"
    refused = sum(len(re.findall(r"refused, nothing changed", f.read_text(encoding="utf-8", errors="replace")))
                  for home in homes.values() for f in home.rglob("*.log*") if f.is_file())
    # Every scheduled blow fell on a fleet still at work (else it tested nothing).
    assert {"cut a", "restart server", "kill dispatcher b", "kill dispatcher c"} <= set(happened)
    assert all(n < CHAOS_TASKS for n in happened.values()), happened
    assert facts["a registered at heal"] == 0, "host A's registration outlived 20 s cut off"
    assert facts["terminated"] > 0 and kills >= 5 and stops >= 5, (facts, kills, stops)
    assert refused > 0, "no stale report was made: the fencing went untested"
    elapsed = time.monotonic() - started
    print(f"\nchaos 500: {elapsed:.0f}s; {kills} worker kills, {stops} stops, {facts['terminated']} backends "
          f"terminated; done at each blow {happened}; spooled {filed}; stale reports refused: {refused}; "
          f"runs {len(outcome)} ({sum(1 for o in outcome.values() if o == 'reclaimed')} reclaimed)")
    assert elapsed < CHAOS_BUDGET_S + 30
