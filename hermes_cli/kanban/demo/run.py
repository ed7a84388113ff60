"""`hermes kanban demo`: a throwaway board, the real dispatcher, real worker processes, and what happened.

The board lives in a fresh temp dir (never the user's HERMES_HOME). Workers are `python -m
hermes_cli.kanban.demo.workers ...` run by this very interpreter, so the demo works from any installation without a
shell or PATH. The demo checks the outcome of every task against what the scenario should produce and says so.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.models import TaskStatus
from ..dispatch.supervisor import Dispatcher, DispatchResult
from ..domain.board import Board
from ..domain.config import load_settings

SLUG = "demo"
#: the demo must finish well inside 30 s even on a loaded machine
DEMO_TIMEOUT_S = 25.0
CONFIG = """\
# Written by `hermes kanban demo`: fast settings for a demo (see docs/dispatcher.md for each one).
[dispatch]
max_spawn = 4
poll_interval = "500ms"
kill_grace = "1s"
lease_grace = "5s"
worker_ttl = "10s"
backup_interval = "off"   # a throwaway board: nothing to back up
"""


@dataclass(frozen=True, slots=True)
class Step:
    key: str
    title: str
    action: str
    parents: tuple[str, ...] = ()
    priority: int = 0
    max_runtime: str | None = None
    max_retries: int | None = None
    #: what the scenario must produce: final status and the outcomes of its runs, in order
    status: TaskStatus = TaskStatus.DONE
    runs: tuple[str, ...] = ("completed",)


SCENARIO: tuple[Step, ...] = (
    Step("fetch", "fetch sources", "work 0.3 'fetched 3 sources'", priority=10),
    Step("index", "build index", "work 0.3 'indexed 1200 rows'", parents=("fetch",), priority=10),
    Step("publish", "publish report (worker reports itself)", "report 'report published by the worker'",
         parents=("index",), priority=10),
    Step("flaky", "upload (crashes once, then succeeds)", "crash-once", priority=5, max_retries=2,
         runs=("crashed", "completed")),
    Step("stuck", "stuck job (times out)", "hang", priority=5, max_runtime="1s", max_retries=0,
         status=TaskStatus.BLOCKED, runs=("timed_out",)),
    Step("lint", "lint", "work 0.2", priority=1),
    Step("tests", "unit tests", "work 0.6", priority=1),
    Step("types", "type check", "work 0.4", priority=1),
    Step("human", "needs a human (worker blocks itself, exits 1)", "block 'needs an API key'",
         status=TaskStatus.BLOCKED, runs=("blocked",)),
    Step("summary", "summarise", "work 0.2 'all green'", parents=("publish", "lint", "tests", "types")),
)


@dataclass
class Row:
    key: str
    task_id: str
    title: str
    status: str
    runs: list[str]
    attempts: int
    duration_s: float | None
    summary: str | None
    expected: str
    ok: bool

    def as_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "title": self.title, "outcome": self.status, "runs": self.runs,
                "attempts": self.attempts, "duration_s": self.duration_s, "summary": self.summary,
                "expected": self.expected, "ok": self.ok}


@dataclass
class DemoReport:
    home: Path
    kept: bool
    rows: list[Row] = field(default_factory=list)
    dispatch: DispatchResult | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "home": str(self.home), "kept": self.kept, "tasks": [r.as_dict() for r in self.rows],
            "dispatch": None if self.dispatch is None else self.dispatch.as_dict(), "problems": self.problems,
        }

    def human(self, elapsed: float) -> str:
        head = (f"{'task':<15} {'title':<48} {'outcome':<8} {'runs':<20} {'attempts':>8} {'took':>6}")
        lines = [head]
        for r in self.rows:
            took = "-" if r.duration_s is None else f"{r.duration_s:.1f}s"
            mark = "" if r.ok else f"   <- expected {r.expected}"
            lines.append(f"{r.task_id:<15} {r.title[:48]:<48} {r.status:<8} {','.join(r.runs):<20} "
                         f"{r.attempts:>8} {took:>6}{mark}")
        if self.dispatch is not None:
            lines += ["", self.dispatch.human()]
        where = (f"kept: inspect it with  HERMES_HOME={shlex.quote(str(self.home))} hermes kanban list --board demo"
                 if self.kept else f"the board was in {self.home} (removed; --keep keeps it)")
        lines += ["", where]
        verdict = ("demo ok: every task ended as expected" if self.ok
                   else "demo FAILED: " + "; ".join(self.problems))
        lines.append(f"{verdict} ({elapsed:.1f}s)")
        return "\n".join(lines)


def run_demo(*, keep: bool = False, log: Callable[[str], None] | None = None) -> DemoReport:
    home = Path(tempfile.mkdtemp(prefix="hermes-demo-"))
    report = DemoReport(home=home, kept=keep)
    say = log or (lambda _m: None)
    try:
        board_dir = home / "kanban" / "boards" / SLUG
        say(f"demo: a throwaway board in {home}; {len(SCENARIO)} tasks; real worker processes")
        with Board.open(SLUG, db_path=str(board_dir / "kanban.db")) as board:
            fd = os.open(board.paths.config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(CONFIG)
            ids = _create(board)
            # Workers inherit this environment: HERMES_HOME points at the throwaway home, never the user's.
            env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_KANBAN_")}
            env["HERMES_HOME"] = str(home)
            settings = load_settings(board.paths)
            dispatcher = Dispatcher(board, settings, until_idle=True, timeout=DEMO_TIMEOUT_S, env=env,
                                    log=(lambda m: say(f"  {m}")) if log else None)
            report.dispatch = dispatcher.run()
            report.rows = _rows(board, ids)
        report.problems = [f"{r.key}: got {r.status} {','.join(r.runs) or 'no runs'}, expected {r.expected}"
                           for r in report.rows if not r.ok]
        if report.dispatch is not None and report.dispatch.error is not None:
            report.problems.append(f"dispatcher: {report.dispatch.error.message}")
        return report
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def _command(action: str) -> str:
    return f"{shlex.quote(sys.executable)} -m hermes_cli.kanban.demo.workers {action}"


def _create(board: Board) -> dict[str, str]:
    ids: dict[str, str] = {}
    for step in SCENARIO:
        task, _ = board.create_task(
            step.title, priority=step.priority, parents=[ids[p] for p in step.parents], command=_command(step.action),
            max_runtime=step.max_runtime, max_retries=step.max_retries, tenant="demo",
        )
        ids[step.key] = task.id
    return ids


def _rows(board: Board, ids: dict[str, str]) -> list[Row]:
    rows = []
    for step in SCENARIO:
        d = board.detail(ids[step.key], events=0)
        runs = [str(r.outcome) if r.outcome else "open" for r in d.runs]
        start = min((r.started_at for r in d.runs), default=None)
        end = max((r.ended_at for r in d.runs if r.ended_at), default=None)
        expected = f"{step.status} {','.join(step.runs)}"
        rows.append(Row(
            key=step.key, task_id=d.task.id, title=d.task.title, status=str(d.task.status), runs=runs,
            attempts=d.task.attempts, duration_s=None if start is None or end is None else round(end - start, 2),
            summary=d.task.summary, expected=expected,
            ok=d.task.status == step.status and tuple(runs) == step.runs,
        ))
    return rows
