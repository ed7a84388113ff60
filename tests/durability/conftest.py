"""Helpers for the durability drills: the real CLI in real processes, real files, real damage.

Damage is written with plain file I/O by the test process while no connection to the board is open (checked), so
the test never commits the very lock-cancelling sin the product avoids.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest

from hermes_cli.kanban.core.paths import BoardPaths, resolve
from hermes_cli.kanban.store.connection import holds_connection


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def hermes(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
    """Run `hermes kanban ARGS` in a new process (the installed entry point's module)."""
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", *args], capture_output=True, text=True,
                       env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def paths() -> BoardPaths:
    return resolve("default")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pages_of(db: Path, *names: str) -> list[int]:
    """Page numbers of the named tables/indexes (dbstat), read through a connection closed before returning."""
    conn = apsw.Connection(str(db))
    try:
        marks = ",".join("?" * len(names))
        return [r[0] for r in conn.execute(f"SELECT pageno FROM dbstat WHERE name IN ({marks}) ORDER BY pageno", names)]
    finally:
        conn.close()


def checkpoint_and_close(db: Path) -> None:
    """Fold the WAL into the main file so page smashes hit live content (the board must be closed everywhere)."""
    conn = apsw.Connection(str(db))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


def smash_pages(db: Path, pages: list[int], seed: int = 7, page_size: int = 4096) -> None:
    """Overwrite whole pages with garbage, with plain file I/O, while no connection to `db` is open here."""
    assert not holds_connection(db), "a Board is still open in the test process"
    for side in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert not side.exists() or side.stat().st_size == 0 or side.name.endswith("-shm"), f"{side} not folded"
    rnd = __import__("random").Random(seed)
    with open(db, "r+b") as f:
        for p in pages:
            f.seek((p - 1) * page_size)
            f.write(bytes(rnd.randrange(256) for _ in range(page_size)))
        f.flush()
        os.fsync(f.fileno())


def wait_for_line(proc: subprocess.Popen[str], want: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if want in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"helper exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
    raise AssertionError(f"helper did not print {want!r} in {timeout}s")


HOLD_WRITE_LOCK = """
import apsw, sys
c = apsw.Connection(sys.argv[1])
c.setbusytimeout(5000)
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()   # hold the write lock until the test closes our stdin
c.execute("ROLLBACK")
"""

HOLD_OPEN = """
import sys
from hermes_cli.kanban import Board
b = Board.open(db_path=sys.argv[1])
b.counts()
print("open", flush=True)
sys.stdin.read()
b.close()
"""


@pytest.fixture
def helper() -> Iterator[Any]:
    """Start a helper process running one of the scripts above; it is stopped (stdin closed, then killed) at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(script: str, *args: str, ready: str) -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        procs.append(p)
        wait_for_line(p, ready)
        return p

    yield start
    for p in procs:
        stop(p)


def stop(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        try:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(timeout=10)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            p.kill()
            p.wait()
    for stream in (p.stdout, p.stderr):
        if stream is not None:
            stream.close()
