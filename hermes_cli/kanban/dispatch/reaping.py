"""Reaping workers and recording how their runs ended.

A worker that exited is recorded: exit 0 = completed, non-zero = crashed, killed on max_runtime = timed_out. A
worker's own report (`hermes kanban complete` in the worker) wins over its exit code: finish_run is fenced and a run
the worker already closed is left as it is.

Exit statuses are never dropped: an exit the board cannot take now (locked past the busy budget, or not writable) is
kept and retried on every tick, and an exit 0 is also written to the spool at once (like a worker's own report), so
that it survives an immediate stop or a crash: the next dispatcher's spool drain (or reconcile-completions) applies it,
and a run whose report waits in the spool is never judged crashed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..core import procs
from ..core.errors import BoardBusy, BoardUnreachable, Conflict, HermesError, NotFound, StaleRun, StorageError
from ..core.models import RunOutcome, TaskStatus
from ..domain.board import Board
from ..domain.config import DispatchSettings
from ..durability import spool
from ..store import tasks as tsql
from . import spawn, workspaces
from .result import DispatchResult
from .workers import REPORTED, Crew, Worker


@dataclass
class Unrecorded:
    """An exit status the board could not take yet (locked, or not writable): retried on every tick. An exit 0 is
    spooled as well (`spooled`), so an immediate stop or a crash of the dispatcher cannot lose it."""

    task_id: str
    run_id: int
    attempt: int
    outcome: RunOutcome
    summary: str
    exit_code: int | None
    took: float | None
    worker: Worker | None
    spooled: spool.SpooledReport | None = None


class Reaper:
    """Reaps the crew's workers and records how runs ended, keeping what the board cannot take yet."""

    def __init__(self, board: Board, settings: DispatchSettings, result: DispatchResult, crew: Crew, *,
                 log: Callable[[str], None]) -> None:
        self.board = board
        self.s = settings
        self.result = result
        self.crew = crew
        self.log = log
        #: exit statuses observed but not recorded yet, by run id (see Unrecorded)
        self.unrecorded: dict[int, Unrecorded] = {}
        #: runs left open because their report waits in the spool (logged once each)
        self._spool_waits: set[int] = set()

    def reap_exited(self) -> None:
        for w in list(self.crew.workers.values()):
            self.reap_if_exited(w)

    def reap_if_exited(self, w: Worker) -> None:
        if w.watcher is not None:
            if spawn.watcher_of(self.board.paths, w.run_id) is not None:
                return  # its watcher (watch.py) records how it ends; we only count it
            run = tsql.get_run(self.board.db, w.run_id)
            if run is not None and run.ended_at is not None:
                self.crew.unsupervise(w)
                self.log(f"{w.task_id} run {w.run_id} ended under its watcher: {run.outcome}")
                return
            self.crew.unwatch(w)  # killed before it could record: judged from here on like any adopted worker
        if w.popen is not None:
            if not procs.exited(w.pid):
                return
            if w.kill_reason is not None:
                # Still unreaped, so the group id is reserved: clean up whatever it left behind in its group.
                procs.signal_group(w.pid, signal.SIGKILL)
            returncode: int | None = w.popen.wait()
        else:
            if procs.state(w.pid, w.create_time) != procs.ProcState.DEAD:
                return
            returncode = None
        self.crew.unsupervise(w)
        self._finish(w, returncode)

    def flush(self) -> None:
        """At a stop: record whatever has exited meanwhile; what the board cannot take now (locked, or a storage error
        stopped us) is kept: an exit 0 is spooled, the rest judged again by the next dispatcher."""
        for w in list(self.crew.workers.values()):
            try:
                self.reap_if_exited(w)
            except StorageError as exc:
                self.log(f"warning: could not record the exit of {w.task_id} run {w.run_id}: {exc.message}")
        try:
            self.retry_unrecorded()
        except StorageError as exc:
            self.log(f"warning: could not record the kept exit statuses: {exc.message}")
        for rec in self.unrecorded.values():
            if rec.spooled is not None:
                later = (f"its exit 0 is in the spool ({rec.spooled.path}); the next dispatcher or "
                         "reconcile-completions applies it")
            else:
                later = "the next dispatcher judges it again (exit status unknown then)"
            self.log(f"warning: {rec.task_id} run {rec.run_id} {rec.outcome} ({rec.summary}) was not recorded: {later}")

    def _finish(self, w: Worker, returncode: int | None) -> None:
        took = time.time() - w.started_at
        try:
            run = tsql.get_run(self.board.db, w.run_id)
        except StorageError:
            run = None  # cannot tell whether it reported: record() keeps (and spools) what we saw
        if run is not None and run.ended_at is not None:
            # Closed before the process ended: by the worker's own report (it wins), a reclaim or an archive.
            if run.outcome in REPORTED:
                self.result.counts["reported"] += 1
            self.note(w, f"{w.task_id} run {w.run_id} {_exit_text(returncode)}{_after(took)}; "
                         f"its run was already closed: {run.outcome}")
            return
        if w.kill_reason == "timed_out":
            outcome = RunOutcome.TIMED_OUT
            summary = f"killed after max runtime {w.max_runtime:g}s ({_exit_text(returncode)})"
        elif returncode is None:
            outcome = RunOutcome.CRASHED
            summary = f"worker pid {w.pid} exited while not supervised by its own dispatcher (exit status unknown)"
        elif returncode == 0:
            outcome, summary = RunOutcome.COMPLETED, "exited 0"
        else:
            outcome, summary = RunOutcome.CRASHED, _exit_text(returncode)
        self.record(w.task_id, w.run_id, w.attempt, outcome, summary, returncode, took=took, worker=w, keep=True)

    def record(self, task_id: str, run_id: int, attempt: int, outcome: RunOutcome, summary: str,
               exit_code: int | None, *, took: float | None = None, worker: Worker | None = None,
               keep: bool = False) -> None:
        """Record how a run ended. `keep`: the outcome was observed (an exit status, a failed spawn), so if the
        board cannot take it now it is kept and retried (an exit 0 also spooled) instead of being dropped; a
        storage error other than a busy board still stops the loop (raised), with the outcome kept. Without
        `keep` (a judgment from the scan, made again on the next one) a storage error propagates as it is."""
        if outcome != RunOutcome.COMPLETED and exit_code is None and self._report_spooled(task_id, run_id):
            return  # the worker's own report (or our exit 0) waits in the spool: the drain applies it
        rec = Unrecorded(task_id, run_id, attempt, outcome, summary, exit_code, took, worker)
        try:
            self._record_now(rec)
        except StorageError as exc:
            if not keep:
                raise
            self._keep(rec, exc)
            # Busy, or a PostgreSQL board out of reach (a partition, a restart): kept and retried every tick.
            if not isinstance(exc, (BoardBusy, BoardUnreachable)):
                raise

    def _report_spooled(self, task_id: str, run_id: int) -> bool:
        """Whether a report for this run waits in the spool: then the run is not judged crashed (status unknown);
        the spool drain applies the report (or reconcile-completions, for a person)."""
        if not os.path.lexists(self.board.paths.spool_dir / spool.file_name(task_id, run_id)):
            return False
        if run_id not in self._spool_waits:
            self._spool_waits.add(run_id)
            self.log(f"{task_id} run {run_id}: its process is gone and a report for it waits in the spool; "
                     "leaving the run to the spool drain")
        return True

    def _keep(self, rec: Unrecorded, exc: StorageError) -> None:
        """Keep an outcome the board could not take; spool an exit 0 (durable) the first time."""
        self.unrecorded[rec.run_id] = rec
        where = ""
        if rec.outcome == RunOutcome.COMPLETED and rec.spooled is None:
            try:
                rec.spooled, _ = spool.spool_report(self.board.paths, "complete", rec.task_id, rec.run_id,
                                                    summary=rec.summary, error=exc)
                where = f"; spooled to {rec.spooled.path}"
            except Conflict:
                where = "; the worker's own report for it is already spooled"  # its report wins anyway
            except StorageError as spool_exc:
                where = f"; could not spool it either ({spool_exc.message})"
        self.note(rec.worker, f"warning: could not record {rec.task_id} run {rec.run_id} {rec.outcome} "
                              f"({exc.message}); kept, retrying{where}")

    def retry_unrecorded(self) -> bool:
        """Record what the board could not take before. Stops at the first busy failure (the board is still locked)
        and returns False then; a spooled exit 0 recorded here is filed as applied, so the drain does not apply it
        again."""
        for rec in list(self.unrecorded.values()):
            try:
                applied = self._record_now(rec)
            except (BoardBusy, BoardUnreachable):
                return False
            del self.unrecorded[rec.run_id]
            if rec.spooled is not None and applied:
                try:
                    spool.archive(self.board.paths, rec.spooled, spool.APPLIED)
                except (HermesError, OSError) as exc:
                    # Harmless: the drain finds the run closed with this very report and files it as skipped.
                    text = exc.message if isinstance(exc, HermesError) else f"{exc.__class__.__name__}: {exc}"
                    self.log(f"warning: could not file {rec.spooled.path} as applied: {text}")
        return True

    def _record_now(self, rec: Unrecorded) -> bool:
        """One attempt to record `rec`. Returns whether it closed the run (False: closed already, or gone)."""
        task_id, run_id, attempt, outcome = rec.task_id, rec.run_id, rec.attempt, rec.outcome
        summary, exit_code, took, worker = rec.summary, rec.exit_code, rec.took, rec.worker
        give_up = self.s.failure_limit is not None and attempt >= self.s.failure_limit
        try:
            task = self.board.finish_run(task_id, run_id, outcome, summary=summary, exit_code=exit_code,
                                         give_up=give_up and outcome != RunOutcome.COMPLETED)
        except StaleRun:
            run = tsql.get_run(self.board.db, run_id)
            if run is not None and run.outcome in REPORTED:
                self.result.counts["reported"] += 1
            text = (f"{task_id} run {run_id}{_after(took)}: {summary}; the run was already closed "
                    f"({run.outcome if run else '?'})")
            self.note(worker, text)
            return False
        except NotFound:
            self.log(f"{task_id} run {run_id}: {summary}; the task is gone")
            return False
        self.result.counts[str(outcome)] += 1
        text = f"{task_id} run {run_id} {outcome}{_after(took)}: {summary}"
        released = workspaces.release(self.board, task)  # a done worktree task's git worktree: removed or kept
        if released is not None:
            text += "; git worktree " + ("removed" if released["kind"] == "workspace_removed"
                                         else f"kept: {released['reason']}")
        if outcome != RunOutcome.COMPLETED:
            if task.status == TaskStatus.BLOCKED:
                self.result.counts["gave_up"] += 1
                text += f"; gave up after {_plural(task.attempts, 'attempt')} (blocked)"
            elif task.retry_at is not None:
                text += f"; retry in {max(0.0, task.retry_at - time.time()):.1f}s"
        self.note(worker, text)
        return True

    def note(self, w: Worker | None, text: str) -> None:
        """A line for the progress log, and for the task's own log when we know the worker."""
        self.log(text)
        if w is not None and w.log is not None:
            spawn.append_log_line(w.log, text)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _after(took: float | None) -> str:
    return "" if took is None else f" after {took:.1f}s"


def _exit_text(returncode: int | None) -> str:
    """How a worker ended, for the log: `exited N`, `killed by SIGX`, or `exit status unknown` (adopted)."""
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        return f"killed by {procs.signal_name(returncode)}"
    return f"exited {returncode}"
