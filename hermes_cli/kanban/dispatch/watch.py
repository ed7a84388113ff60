"""The per-run watcher: supervises one worker started by a one-pass `hermes kanban dispatch` after the pass returned.

Only a process's parent learns its exit status, and a pass returns at once, so the pass starts each worker under a
small watcher process instead (spawn.start with `watch`): `python -P <this file>`, in a session of its own. It

1. reads the worker (argv, environment, cwd, the log's fd) and the run from its stdin (a pipe: never argv, the
   environment may hold secrets);
2. takes an exclusive flock on `<board>/watchers/<run>.lock` (its pid inside) for as long as it lives: a dispatcher
   that finds the lock held leaves the run to it (spawn.watcher_of, adoption.py, reaping.py), and the kernel drops
   the lock however the watcher dies, so a killed watcher only brings back the dispatcher's own judgment;
3. starts the worker with the very Popen call of spawn.start (same env, cwd, log file, its own session and process
   group) and answers the pass with the worker's pid and start time, all before importing hermes (stdlib only up
   to here: the pass waits for that answer, so this is the start-up latency a watcher adds);
4. then, with the dispatcher's own code (workers.Crew and reaping.Reaper, the settings the pass resolved): records
   the worker's pid on the run if the pass could not, extends the run's lease every worker_ttl / 3 while the worker
   runs (fenced: once the run is no longer current it stops extending it, and stops the worker unless the worker
   reported, like the dispatcher), kills the worker's group at max_runtime (timed_out), and records how it ended
   exactly as the dispatcher does (exit 0 = completed unless the worker reported, non-zero = crashed, an exit 0 the
   board cannot take is spooled), removes its lock file and exits.

docs/dispatcher.md ("One pass for scripts and cron") says what it costs; bench/watcher_cost.py measures it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import subprocess
import sys
import time
from typing import Any

#: how long kept exit statuses are retried when the board cannot take them (an exit 0 is spooled meanwhile)
RECORD_TRY_S = 300.0
#: while an exit status waits to be recorded, try again this often
RETRY_RECORD_S = 0.25


def _reply(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode("ascii"))


def _take_lock(path: str) -> int:
    """Create the lock file already locked, with our pid in it (written, locked, then renamed into place, so no
    reader ever sees it unlocked while we live). Returns its fd, held until we exit."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp)  # left by a killed process that had our pid: the name is ours now
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    os.rename(tmp, path)
    return fd


def main() -> int:
    spec = json.loads(sys.stdin.buffer.read())
    os.close(0)
    log_fd = int(spec["log_fd"])
    lock_fd = _take_lock(spec["lock"])
    try:
        # The call of spawn.start, argument for argument (this module cannot import spawn before the worker runs).
        popen = subprocess.Popen(
            spec["argv"], cwd=spec["cwd"], env=spec["env"], stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
            close_fds=True, start_new_session=True,
        )
        started_at = time.time()  # its max runtime counts from here, not from the end of our imports
    except ValueError as exc:
        os.unlink(spec["lock"])
        _reply({"error": "ValueError", "message": str(exc)})
        return 0
    except OSError as exc:
        os.unlink(spec["lock"])
        _reply({"error": "OSError", "errno": exc.errno or errno.EIO, "strerror": exc.strerror or str(exc),
                "filename": exc.filename})
        return 0
    finally:
        os.close(log_fd)  # the worker has its own copy; our stderr (fd 2) still goes to the same log
    import psutil  # the worker's start time, read the way core.procs reads it (the dispatcher compares the two)

    try:
        create_time: float | None = float(psutil.Process(popen.pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        create_time = None  # cannot happen to our unreaped child; the run then keeps a pid the lease decides on
    _reply({"pid": popen.pid, "create_time": create_time, "watcher": os.getpid()})
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the pass stops reading: nothing of ours may go to a closed pipe
    os.close(devnull)
    try:
        supervise(spec, popen, create_time, started_at)
    finally:
        try:
            os.unlink(spec["lock"])  # before the lock is released (at exit): a reader never unlinks a live one
        except FileNotFoundError:
            pass
        os.close(lock_fd)
    return 0


def supervise(spec: dict[str, Any], popen: subprocess.Popen[bytes], create_time: float | None,
              started_at: float) -> None:
    """Step 4 of the module docstring: the dispatcher's supervision of one worker, in this process."""
    from dataclasses import fields

    from hermes_cli.kanban.core import procs
    from hermes_cli.kanban.core.errors import HermesError, NotFound, StorageError
    from hermes_cli.kanban.dispatch.holding import Heartbeat
    from hermes_cli.kanban.dispatch.reaping import Reaper
    from hermes_cli.kanban.dispatch.result import DispatchResult
    from hermes_cli.kanban.dispatch.spawn import append_log_line
    from hermes_cli.kanban.dispatch.workers import Crew, Worker
    from hermes_cli.kanban.domain.board import Board
    from hermes_cli.kanban.domain.config import DispatchSettings
    from hermes_cli.kanban.durability import spool
    from hermes_cli.kanban.store import tasks as tsql

    task_id, run_id, pid = str(spec["task_id"]), int(spec["run_id"]), popen.pid

    def say(text: str) -> None:
        append_log_line(spec["log"], f"watcher {os.getpid()}: {text}")  # our lines in the task's log

    known = {f.name for f in fields(DispatchSettings)}
    settings = DispatchSettings(**{k: v for k, v in spec["settings"].items() if k in known})
    try:
        board = Board.open(spec["board"], db_path=spec["db"])
    except HermesError as exc:
        # Nothing can be recorded: give the run back to the dispatchers (they judge it as before watchers existed).
        say(f"cannot open the board ({exc.message}); leaving run {run_id} to the next dispatcher")
        return
    try:
        run = tsql.get_run(board.db, run_id)
        if run is not None and run.pid != pid:
            # The pass died before recording it (it normally has: our imports take longer than its write).
            board.set_run_process(run_id, pid, create_time)
    except (StorageError, NotFound) as exc:
        say(f"could not record pid {pid} of run {run_id}: {getattr(exc, 'message', exc)}")
    max_runtime = spec["max_runtime"]
    w = Worker(task_id=task_id, run_id=run_id, pid=pid, create_time=create_time, attempt=int(spec["attempt"]),
               started_at=started_at, deadline=None if max_runtime is None else started_at + max_runtime,
               max_runtime=max_runtime, popen=popen, pidfd=procs.pidfd(pid))
    result = DispatchResult(board=board.slug)
    # The Crew's heartbeat is the dispatcher's registry of runs to extend; its thread (which refreshes the
    # dispatcher lease we do not hold) is never started here: the loop below extends our one run itself.
    crew = Crew(board, settings, result, Heartbeat(board.paths, settings, wake=lambda: None), log=say)
    reaper = Reaper(board, settings, result, crew, log=say)
    crew.supervise(w)
    every = max(0.05, settings.worker_ttl / 3)
    next_beat = time.time() + every
    fenced = False
    stop_trying: float | None = None
    storage_error = ""
    try:
        while True:
            now = time.time()
            try:
                if reaper.unrecorded:
                    reaper.retry_unrecorded()
                if w.run_id in crew.workers and procs.exited(pid):
                    # As the dispatcher's tick: a report the worker spooled (board busy) is applied before its
                    # exit is judged, so its report still wins over the exit code.
                    name = spool.file_name(task_id, run_id)
                    if any(os.path.lexists(d / name) for d in (board.paths.spool_dir, board.paths.host_spool_dir)):
                        from hermes_cli.kanban.durability import drain  # here: 50 ms of imports, rarely needed

                        drain.drain_if_healthy(board, log=say)
                    reaper.reap_if_exited(w)
            except StorageError as exc:  # not a busy board: record() kept it (and spooled an exit 0)
                if exc.message != storage_error:
                    say(f"warning: {exc.message}; trying again")
                storage_error = exc.message
            if w.run_id not in crew.workers:
                if not reaper.unrecorded:
                    return
                stop_trying = stop_trying or now + RECORD_TRY_S
                if now >= stop_trying:
                    for rec in reaper.unrecorded.values():
                        later = ("its exit 0 is in the spool" if rec.spooled is not None
                                 else "the next dispatcher judges it (exit status unknown then)")
                        say(f"giving up recording {rec.task_id} run {rec.run_id} {rec.outcome}: {later}")
                    return
            else:
                if not fenced and now >= next_beat:
                    next_beat = now + every
                    fenced = _beat(board, crew, w, settings.worker_ttl, now, say)
                crew.enforce(now)
            until = crew.next_wake(now, next_beat)
            if reaper.unrecorded:
                until = min(until, now + RETRY_RECORD_S)
            _wait(w.pidfd, until - time.time())
    finally:
        board.close()


def _beat(board: Any, crew: Any, w: Any, ttl: float, now: float, say: Any) -> bool:
    """Extend the run's lease if the worker runs (a paused one is let run out, as the dispatcher does). Returns True
    when the run is no longer current: then it is never extended again, and the worker is stopped unless it
    reported (Crew.fence: the dispatcher's rule)."""
    from hermes_cli.kanban.core import procs
    from hermes_cli.kanban.core.errors import BoardBusy, NotFound, StaleRun, StorageError

    if procs.state(w.pid, w.create_time) != procs.ProcState.ALIVE:
        return False
    try:
        board.heartbeat(w.task_id, w.run_id, ttl=ttl)
    except (StaleRun, NotFound):
        crew.fence(w.run_id, now)
        return True
    except BoardBusy:
        return False  # the next beat tries again; a lease is three beats long
    except StorageError as exc:
        say(f"warning: could not extend the lease of run {w.run_id}: {exc.message}")
    return False


def _wait(pidfd: int, timeout: float) -> None:
    """Sleep until the worker exits (its pidfd) or `timeout` seconds pass."""
    ms = max(0, int(timeout * 1000 + 0.999))
    if pidfd < 0:
        time.sleep(min(ms, 100) / 1000)  # no pidfd on this kernel: poll for the exit
        return
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.poll(ms)


if __name__ == "__main__":
    sys.exit(main())
