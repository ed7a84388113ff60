"""Process identity and signalling. A pid alone is never trusted: `(pid, start time)` names a process.

The start time comes from psutil (`create_time()`: boot time + the kernel's start tick, identical from every process
on the host). A pid that is alive but started at another time is a different process that reused the number: it is
treated as dead and is never signalled.
"""

from __future__ import annotations

import os
import signal
import socket
from enum import StrEnum

import psutil

#: create_time() has clock-tick resolution (10 ms); two readings of one process agree exactly, so this only absorbs
#: float rounding. A reused pid gets a start time at least one tick later.
CREATE_TIME_TOLERANCE = 0.005

HOST = socket.gethostname()


class ProcState(StrEnum):
    ALIVE = "alive"  #: running (or sleeping) with the recorded start time
    STOPPED = "stopped"  #: alive but paused (SIGSTOP, a debugger): makes no progress, so its lease is not extended
    DEAD = "dead"  #: gone, a zombie, or the pid now belongs to another process


def create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def identity() -> tuple[str, int, float | None]:
    """(host, pid, start time) of this process."""
    return HOST, os.getpid(), create_time(os.getpid())


def same_start(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= CREATE_TIME_TOLERANCE


def state(pid: int, started: float | None) -> ProcState:
    """What the process `(pid, started)` is doing now. With no recorded start time the pid cannot be verified and
    the answer is DEAD only if no process has that pid at all (callers then leave the decision to lease expiry)."""
    try:
        proc = psutil.Process(pid)
        ct = proc.create_time()
        status = proc.status()
    except psutil.NoSuchProcess:  # ZombieProcess is a subclass: a zombie has exited
        return ProcState.DEAD
    except psutil.AccessDenied:
        # Another user's process with this pid: it cannot be ours (workers run as the dispatcher's user).
        return ProcState.DEAD
    if started is not None and not same_start(ct, started):
        return ProcState.DEAD
    if status == psutil.STATUS_ZOMBIE or status == psutil.STATUS_DEAD:
        return ProcState.DEAD
    if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
        return ProcState.STOPPED
    return ProcState.ALIVE


def find_worker(run_id: int, db: str) -> tuple[int, float] | None:
    """The worker process started for `run_id` of the board at `db`, found by its environment (the worker
    contract's HERMES_KANBAN_RUN_ID and HERMES_KANBAN_DB) among this user's processes; only a session leader
    counts (the worker itself, not a child that inherited its environment). For a run whose dispatcher died
    between starting the worker and recording its pid."""
    me = os.getuid()
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != me or os.getsid(proc.pid) != proc.pid:
                continue
            env = proc.environ()
            if env.get("HERMES_KANBAN_RUN_ID") == str(run_id) and env.get("HERMES_KANBAN_DB") == db:
                return proc.pid, float(proc.create_time())
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, PermissionError):
            continue  # gone meanwhile, or not ours to read
    return None


def pidfd(pid: int) -> int:
    """A pidfd for `pid` (readable once it exits), or -1 where the kernel has none. O_CLOEXEC is implied."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def exited(pid: int) -> bool:
    """For our own child: has it exited? Does not reap it (WNOWAIT), so its pid and process group stay reserved."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # already reaped
    return info is not None


def signal_group(pid: int, sig: int) -> bool:
    """Send `sig` to the process group led by `pid` (workers start their own session, so pgid == pid), falling back
    to the pid alone when it leads no group. Returns whether anything was signalled. The caller has verified the
    identity of `pid` (or holds it unreaped as its child)."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def signal_verified(pid: int, started: float | None, sig: int) -> bool:
    """Signal the group of a process that is not our child, only after checking it still is `(pid, started)`."""
    if started is None or state(pid, started) == ProcState.DEAD:
        return False
    return signal_group(pid, sig)


def signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"
