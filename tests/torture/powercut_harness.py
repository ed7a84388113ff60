"""Power-cut simulation: an APSW VFS that remembers what was synced, and what a power cut would leave behind.

Used by tests/torture/test_powercut.py (CI) and bench/powercut.py (the full table). The method is the one
described in /work/shared/reference/sqlite-reliability.md section 2 (after SQLite's own crash tests, test6.c
and TH3):

* The real product writes a board: `Board.open(db_path=..., vfs=VFS_NAME)` then create / claim / heartbeat /
  complete / block / crash / unblock / review / comment through the public Board API. All I/O really happens
  (to real files, so SQLite, WAL and its -shm behave exactly as in production); the VFS only watches.
* For every file it keeps the *durable image* (the content at its last xSync) and the list of writes and
  truncates issued since. For the directory it keeps the durable name -> inode map and the current one.
* Every xWrite / xTruncate / xSync / xDelete and every directory fsync is one I/O op. A cut at op N is taken
  just before op N runs (TH3-style, so cuts land inside commits and checkpoints as often as between them): for
  each name the directory entry is the durable one or the current one (a coin flip when they differ, since
  POSIX orders nothing in a directory without a directory fsync); each surviving inode is its durable image
  plus a random subset of its unsynced writes/truncates applied in a random order (SQLite assumes writes are
  reordered until a sync). The -shm file is dropped (it is volatile shared memory). The image is opened with
  the stock driver (APSW's default VFS), which runs hot-journal rollback or WAL recovery as after a real
  reboot.
* Checks per cut: `PRAGMA integrity_check`; the recovered logical content (every table, user_version) must
  equal the board's state after exactly k of the workload's calls for some k (the prefix property: no hole, no
  partial transaction); k must be >= the number of calls acknowledged (returned) before the cut, else
  acknowledged commits were lost (`lost`, with how many).

Directory syncs are modelled as SQLite's unix VFS does them: xDelete(syncdir=True) fsyncs the directory; a
journal/WAL file opened with SQLITE_OPEN_CREATE fsyncs the directory on its first xSync (os_unix.c isNewJrnl /
UNIXFILE_DIRSYNC); the main database file never does, which is why `store/connection.py` fsyncs the board
directory after creating a board: that call (`connection.fsync_dir`) is observed by wrapping it for the
duration of a run. Not modelled: torn writes inside one xWrite (SQLite assumes powersafe overwrite; WAL frames
carry checksums), garbage in unsynced regions, and lying fsyncs.

The real xSync is not passed to the OS (the model decides durability); that keeps 300 cuts per mode fast on a
disk. Acknowledged = the Board call returned before the cut: with synchronous=FULL that is when SQLite has
synced the WAL. `PRAGMA wal_autocheckpoint` is lowered on the workload's connection (default 20 pages) so cuts
also land in checkpoints, which is where NORMAL and OFF are exposed; `synchronous=OFF` (refused by the
product) is set on the connection directly, as the positive control.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from hermes_cli.kanban.domain.board import Board

VFS_NAME = "hermes-powercut"
MODES = ("full", "normal", "off", "extra")
#: workload calls of one calibration run; cut points are drawn uniformly over the I/O ops such a run issues
CALIBRATION_STEPS = 60
#: share of cut points drawn inside board creation (Board.open), so creation is always covered
CREATION_SHARE = 0.05
DEFAULT_AUTOCHECKPOINT = 20

_EMPTY_DIGEST: str | None = None


# -- the model ---------------------------------------------------------------------------------------------
class Inode:
    """One file's content as the disk holds it: `durable` survives any cut; `pending` (ops since last sync)
    survive a cut only partly, in any order."""

    __slots__ = ("durable", "pending")

    def __init__(self, content: bytes = b"") -> None:
        self.durable = bytearray(content)
        self.pending: list[tuple[str, int, bytes]] = []

    def sync(self) -> None:
        apply_ops(self.durable, self.pending)
        self.pending = []


def apply_ops(buf: bytearray, ops: list[tuple[str, int, bytes]]) -> None:
    for kind, offset, data in ops:
        if kind == "w":
            end = offset + len(data)
            if len(buf) < end:
                buf.extend(bytes(end - len(buf)))
            buf[offset:end] = data
        else:  # "t": truncate (or extend) to `offset` bytes
            if offset < len(buf):
                del buf[offset:]
            else:
                buf.extend(bytes(offset - len(buf)))


@dataclass
class Snapshot:
    """What a cut at op `op` needs: taken before op `op` ran, with `acked` workload calls returned by then."""

    op: int
    acked: int
    durable_names: dict[str, Inode]
    names: dict[str, Inode]
    images: dict[int, tuple[bytes, tuple[tuple[str, int, bytes], ...]]]


class Disk:
    """The simulated disk under one board directory, and the cut points of one workload run."""

    def __init__(self, directory: Path, db_name: str, cuts: list[int]) -> None:
        self.dir = str(directory)
        self.db_name = db_name
        self.names: dict[str, Inode] = {}
        self.durable_names: dict[str, Inode] = {}
        self.ops = 0
        self.acked = 0
        self.cuts = sorted(set(cuts))
        self.snapshots: list[Snapshot] = []

    def tracks(self, path: str) -> str | None:
        """The name of `path` in the board directory if it is the database or a journal of it, else None."""
        head, name = os.path.split(os.path.abspath(path))
        return name if head == self.dir and name.startswith(self.db_name) else None

    def tick(self) -> None:
        """One I/O op is about to run: take the snapshots of the cuts placed before it."""
        self.ops += 1
        while self.cuts and self.cuts[0] <= self.ops:
            self.cuts.pop(0)
            self.snapshots.append(self._snapshot())

    def sync_dir(self) -> None:
        self.durable_names = dict(self.names)

    def _snapshot(self) -> Snapshot:
        inodes = {id(i): i for i in (*self.names.values(), *self.durable_names.values())}
        return Snapshot(
            op=self.ops,
            acked=self.acked,
            durable_names=dict(self.durable_names),
            names=dict(self.names),
            images={k: (bytes(i.durable), tuple(i.pending)) for k, i in inodes.items()},
        )


class PowerCutFile(apsw.VFSFile):
    def __init__(self, disk: Disk, inode: Inode, dirsync: bool, name: Any, flags: list[int]) -> None:
        super().__init__("", name, flags)
        self.disk = disk
        self.inode = inode
        #: os_unix.c UNIXFILE_DIRSYNC: a newly created journal/WAL fsyncs its directory on its first sync
        self.dirsync = dirsync

    def xWrite(self, data: Any, offset: int) -> None:
        self.disk.tick()
        super().xWrite(data, offset)
        self.inode.pending.append(("w", offset, bytes(data)))

    def xTruncate(self, newsize: int) -> None:
        self.disk.tick()
        super().xTruncate(newsize)
        self.inode.pending.append(("t", newsize, b""))

    def xSync(self, flags: int) -> None:
        # Not passed to the OS: durability is decided by the model, and real fsyncs would only cost time.
        self.disk.tick()
        self.inode.sync()
        if self.dirsync:
            self.dirsync = False
            self.disk.sync_dir()


class PowerCutVFS(apsw.VFS):
    """Inherits the default (unix) VFS; files of the current Disk are watched, the rest passes through."""

    def __init__(self) -> None:
        super().__init__(VFS_NAME, base="")
        self.disk: Disk | None = None

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        disk = self.disk
        key = disk.tracks(path) if disk is not None and path is not None else None
        if disk is None or key is None:
            return apsw.VFSFile("", name, flags)
        existed = os.path.exists(path)
        inode = disk.names.get(key)
        if inode is None or not existed:
            if existed:
                # Reading it here would open/close an fd on a file SQLite may hold: runs start from an empty dir.
                raise AssertionError(f"{path} existed before the model saw it; power-cut runs need a fresh directory")
            inode = Inode()
            disk.names[key] = inode
        inflags = flags[0]
        journal_types = apsw.SQLITE_OPEN_MAIN_JOURNAL | apsw.SQLITE_OPEN_WAL | apsw.SQLITE_OPEN_SUPER_JOURNAL
        dirsync = bool(inflags & apsw.SQLITE_OPEN_CREATE) and bool(inflags & journal_types)
        return PowerCutFile(disk, inode, dirsync, name, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        disk = self.disk
        key = disk.tracks(filename) if disk is not None else None
        if disk is None or key is None:
            return super().xDelete(filename, syncdir)
        disk.tick()
        super().xDelete(filename, syncdir)
        disk.names.pop(key, None)
        if syncdir:
            disk.sync_dir()


_VFS: PowerCutVFS | None = None


def vfs() -> PowerCutVFS:
    global _VFS
    if _VFS is None:
        _VFS = PowerCutVFS()
    return _VFS


@contextmanager
def watching(disk: Disk) -> Iterator[None]:
    """Route the VFS to `disk`, and observe the product's directory fsyncs (store/connection.py fsync_dir)."""
    from hermes_cli.kanban.store import connection

    v = vfs()
    original = connection.fsync_dir

    def observed_fsync_dir(path: os.PathLike[str] | str) -> None:
        mine = os.path.abspath(path) == disk.dir
        if mine:
            disk.tick()
        original(path)
        if mine:
            disk.sync_dir()

    v.disk = disk
    connection.fsync_dir = observed_fsync_dir  # type: ignore[assignment]
    try:
        yield
    finally:
        connection.fsync_dir = original  # type: ignore[assignment]
        v.disk = None


# -- the workload ------------------------------------------------------------------------------------------
_WORDS = "lease fence run task board wal page commit sync cut queue worker claim spool event doorbell".split()


class Workload:
    """A random mix of Board calls, each one committing transaction (the board's real API, nothing else)."""

    def __init__(self, board: Board, rng: random.Random) -> None:
        self.board = board
        self.rng = rng
        self.claims: list[tuple[str, int]] = []
        self.made = 0

    def _text(self, lo: int, hi: int) -> str:
        n = self.rng.randint(lo, hi)
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < n:
            words.append(self.rng.choice(_WORDS))
        return " ".join(words)

    def step(self) -> str:
        """One Board call that commits, picked at random among those that make sense now. Returns its name."""
        b, rng = self.board, self.rng
        counts = b.counts()
        weights = {
            "create": 3.0,
            "claim": 3.0 if counts.get("ready", 0) and len(self.claims) < 3 else 0.0,
            "heartbeat": 1.5 if self.claims else 0.0,
            "finish": 3.0 if self.claims else 0.0,
            "unblock": 0.5 if counts.get("blocked", 0) else 0.0,
            "review": 0.7 if counts.get("review", 0) else 0.0,
            "comment": 0.7 if self.made else 0.0,
        }
        action = rng.choices(list(weights), weights=list(weights.values()))[0]
        if action == "claim":
            claim = b.claim(worker="powercut", ttl=3600)
            if claim is None:
                raise AssertionError("claim found nothing although a task was ready")
            self.claims.append((claim.task_id, claim.run_id))
            return "claim"
        if action == "heartbeat":
            task, run = rng.choice(self.claims)
            b.heartbeat(task, run, ttl=3600)
            return "heartbeat"
        if action == "finish":
            task, run = self.claims.pop(rng.randrange(len(self.claims)))
            r = rng.random()
            if r < 0.8:
                b.complete(task, run, summary=self._text(0, 400))
                return "complete"
            if r < 0.9:
                b.block(task, run, reason="needs a person")
                return "block"
            b.finish_run(task, run, "crashed", summary="exit 1", exit_code=1, retry_after=0)
            return "crash"
        if action == "unblock":
            b.unblock(b.list_tasks(status="blocked", limit=1)[0].id)
            return "unblock"
        if action == "review":
            task = b.list_tasks(status="review", limit=1)[0]
            if rng.random() < 0.7:
                b.approve(task.id)
                return "approve"
            b.request_changes(task.id, reason="add a test")
            return "request_changes"
        if action == "comment":
            target = rng.choice(b.list_tasks(limit=50, sort="newest"))
            b.comment(target.id, self._text(1, 600), author="powercut")
            return "comment"
        parents: list[str] = []
        if self.made and rng.random() < 0.2:
            live = b.list_tasks(status=["todo", "ready", "running"], limit=20, sort="newest")
            parents = [rng.choice(live).id] if live else []
        self.made += 1
        b.create_task(
            f"task {self.made} {self._text(0, 40)}",
            body=self._text(0, 1500),
            priority=rng.randint(0, 5),
            parents=parents,
            review=rng.random() < 0.15,
        )
        return "create"


# -- logical state -----------------------------------------------------------------------------------------
def logical_digest(conn: apsw.Connection) -> str:
    """A hash of everything the board says: user_version, the schema, and every row of every table."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(conn.execute("PRAGMA user_version").fetchall()).encode())
    schema = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name").fetchall()
    h.update(repr(schema).encode())
    for kind, name, _tbl, _sql in schema:
        if kind != "table":
            continue
        quoted = '"' + name.replace('"', '""') + '"'
        for row in sorted(repr(r) for r in conn.execute(f"SELECT * FROM {quoted}")):
            h.update(row.encode())
    return h.hexdigest()


def empty_digest() -> str:
    global _EMPTY_DIGEST
    if _EMPTY_DIGEST is None:
        conn = apsw.Connection(":memory:")
        _EMPTY_DIGEST = logical_digest(conn)
        conn.close()
    return _EMPTY_DIGEST


# -- one run -----------------------------------------------------------------------------------------------
@contextmanager
def _synchronous_env(mode: str) -> Iterator[None]:
    """The product refuses synchronous=OFF: the OFF control opens under NORMAL (so no sync after COMMIT either),
    then switches the connection."""
    old = os.environ.get("HERMES_KANBAN_SYNCHRONOUS")
    os.environ["HERMES_KANBAN_SYNCHRONOUS"] = "normal" if mode == "off" else mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HERMES_KANBAN_SYNCHRONOUS", None)
        else:
            os.environ["HERMES_KANBAN_SYNCHRONOUS"] = old


@dataclass
class RunRecord:
    """One workload run: the state digest after each acknowledged call (index 0 = nothing, 1 = Board.open)."""

    digests: list[str]
    snapshots: list[Snapshot]
    ops: int
    #: I/O ops issued before Board.open returned (creating the board: journal, WAL switch, directory fsync,
    #: schema)
    creation_ops: int = 0
    steps: dict[str, int] = field(default_factory=dict)


def run_workload(
    directory: Path,
    mode: str,
    rng: random.Random,
    *,
    cuts: list[int] | None = None,
    steps: int | None = None,
    autocheckpoint: int = DEFAULT_AUTOCHECKPOINT,
) -> RunRecord:
    """Run the workload on a fresh board in `directory` until every cut point fired (or for `steps` calls)."""
    directory.mkdir(parents=True, exist_ok=True)
    disk = Disk(directory, "kanban.db", cuts or [])
    digests = [empty_digest()]
    creation_ops = 0
    done: dict[str, int] = {}
    with watching(disk), _synchronous_env(mode):
        board = Board.open(db_path=str(directory / "kanban.db"), vfs=VFS_NAME)
        try:
            digests.append(logical_digest(board.db.conn))
            disk.acked = 1
            creation_ops = disk.ops
            conn = board.db.conn
            conn.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
            if mode == "off":
                conn.execute("PRAGMA synchronous=OFF")
            work = Workload(board, rng)
            n = 0
            while disk.cuts if steps is None else n < steps:
                kind = work.step()
                done[kind] = done.get(kind, 0) + 1
                digests.append(logical_digest(conn))
                disk.acked += 1
                n += 1
        finally:
            disk.cuts = []  # closing (checkpoint, WAL delete) is not part of any cut
            board.close()
    check_model(disk)
    return RunRecord(digests=digests, snapshots=disk.snapshots, ops=disk.ops, steps=done, creation_ops=creation_ops)


def check_model(disk: Disk) -> None:
    """The model's current files (durable image + every pending op, in order) must equal the real files.

    Called after the board is closed: this process then holds no connection to them, so reading them cannot
    drop a POSIX lock. A mismatch means the VFS missed an I/O path, and every figure of the run would be
    meaningless.
    """
    real = {p.name for p in Path(disk.dir).iterdir() if disk.tracks(str(p)) and not p.name.endswith("-shm")}
    if real != set(disk.names):
        raise AssertionError(f"model files {sorted(disk.names)} != real files {sorted(real)} in {disk.dir}")
    for name, inode in disk.names.items():
        expected = bytearray(inode.durable)
        apply_ops(expected, inode.pending)
        if bytes(expected) != (Path(disk.dir) / name).read_bytes():
            raise AssertionError(f"model content of {name} differs from the real file in {disk.dir}")


# -- one cut -----------------------------------------------------------------------------------------------
@dataclass
class CutResult:
    op: int
    acked: int
    #: "ok", "lost" (consistent but acknowledged commits missing), "not_prefix" (a state no call sequence
    #: produced), "corrupt" (integrity_check failed or the file is unreadable)
    outcome: str
    lost: int = 0
    detail: str = ""


def materialise(snap: Snapshot, rng: random.Random, target: Path, *, keep: str = "random") -> list[str]:
    """Write what the disk would hold after a power cut at `snap` into `target`. Returns the names written.

    keep="random": the power cut (each name durable or current; a random subset of unsynced ops, reordered).
    keep="all": what a process crash (SIGKILL) leaves: current names, every write in order (the page cache
    survives).
    """
    target.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for name in sorted(set(snap.names) | set(snap.durable_names)):
        durable, current = snap.durable_names.get(name), snap.names.get(name)
        if keep == "all":
            inode = current
        else:
            inode = durable if durable is current else rng.choice([durable, current])
        if inode is None:
            continue
        base, pending = snap.images[id(inode)]
        content = bytearray(base)
        if keep == "all":
            survivors = list(pending)
        else:
            fraction = rng.random()
            survivors = [op for op in pending if rng.random() < fraction]
            rng.shuffle(survivors)
        apply_ops(content, survivors)
        (target / name).write_bytes(content)
        written.append(name)
    return written


def check_cut(
    record: RunRecord, snap: Snapshot, rng: random.Random, target: Path, *, keep: str = "random"
) -> CutResult:
    materialise(snap, rng, target, keep=keep)
    db = target / "kanban.db"
    try:
        conn = apsw.Connection(str(db))  # the stock driver: default VFS
    except apsw.Error as exc:
        return CutResult(snap.op, snap.acked, "corrupt", detail=f"open: {exc}")
    try:
        check = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if check != ["ok"]:
            return CutResult(snap.op, snap.acked, "corrupt", detail="; ".join(map(str, check[:3])))
        digest = logical_digest(conn)
    except apsw.Error as exc:
        return CutResult(snap.op, snap.acked, "corrupt", detail=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    # The call in flight at the cut (index acked + 1) may or may not have committed; later ones never ran.
    candidates = record.digests[: snap.acked + 2]
    matches = [k for k, d in enumerate(candidates) if d == digest]
    if not matches:
        return CutResult(snap.op, snap.acked, "not_prefix", detail="recovered state matches no prefix of the calls")
    k = max(matches)
    if k < snap.acked:
        return CutResult(snap.op, snap.acked, "lost", lost=snap.acked - k)
    return CutResult(snap.op, snap.acked, "ok")


# -- one mode ----------------------------------------------------------------------------------------------
@dataclass
class ModeResult:
    mode: str
    cuts: int = 0
    runs: int = 0
    corrupt: int = 0
    not_prefix: int = 0
    lost_cuts: int = 0
    lost_commits: int = 0
    acked_total: int = 0
    during_creation: int = 0
    ops_per_run: int = 0
    seconds: float = 0.0
    steps: dict[str, int] = field(default_factory=dict)
    examples: list[CutResult] = field(default_factory=list)

    @property
    def failed_checks(self) -> int:
        return self.corrupt + self.not_prefix

    def as_row(self) -> dict[str, Any]:
        return {
            "mode": self.mode.upper(),
            "cuts": self.cuts,
            "runs": self.runs,
            "corrupt": self.corrupt,
            "not_prefix": self.not_prefix,
            "cuts_losing_acked": self.lost_cuts,
            "acked_commits_lost": self.lost_commits,
            "acked_at_cuts": self.acked_total,
            "cuts_in_creation": self.during_creation,
            "ops_per_run": self.ops_per_run,
            "seconds": round(self.seconds, 1),
        }


def calibrate(workdir: Path, mode: str, seed: int, autocheckpoint: int = DEFAULT_AUTOCHECKPOINT) -> tuple[int, int]:
    """I/O ops of a CALIBRATION_STEPS-call run and of its board creation (cut points fall in [1, ops])."""
    record = run_workload(
        workdir / f"calibrate-{mode}",
        mode,
        random.Random(seed),
        steps=CALIBRATION_STEPS,
        autocheckpoint=autocheckpoint,
    )
    shutil.rmtree(workdir / f"calibrate-{mode}")
    return record.ops, record.creation_ops


def run_mode(
    mode: str,
    cuts: int,
    workdir: Path,
    *,
    seed: int = 1,
    cuts_per_run: int = 5,
    autocheckpoint: int = DEFAULT_AUTOCHECKPOINT,
    keep_failures: int = 0,
    keep: str = "random",
) -> ModeResult:
    """`cuts` simulated power cuts under `mode`, `cuts_per_run` per workload run (each cut is checked on
    its own image; several per run only saves re-running the same prefix)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    started = time.monotonic()
    rng = random.Random(f"{seed}-{mode}")
    result = ModeResult(mode)
    span, creation = calibrate(workdir, mode, rng.randrange(1 << 30), autocheckpoint)
    result.ops_per_run = span
    left = cuts
    while left > 0:
        k = min(cuts_per_run, left)
        # Uniform over a whole run, plus a small share forced into board creation (a few ops out of ~1000,
        # which uniform draws alone would often miss entirely).
        points = [rng.randint(1, creation if rng.random() < CREATION_SHARE else span) for _ in range(k)]
        run_dir = workdir / f"{mode}-run{result.runs}"
        record = run_workload(
            run_dir / "board",
            mode,
            random.Random(rng.randrange(1 << 30)),
            cuts=points,
            autocheckpoint=autocheckpoint,
        )
        for step, n in record.steps.items():
            result.steps[step] = result.steps.get(step, 0) + n
        for i, snap in enumerate(record.snapshots):
            target = run_dir / f"cut{i}"
            res = check_cut(record, snap, random.Random(rng.randrange(1 << 30)), target, keep=keep)
            result.cuts += 1
            result.acked_total += snap.acked
            result.during_creation += snap.acked == 0
            if res.outcome == "corrupt":
                result.corrupt += 1
            elif res.outcome == "not_prefix":
                result.not_prefix += 1
            elif res.outcome == "lost":
                result.lost_cuts += 1
                result.lost_commits += res.lost
            if res.outcome != "ok" and len(result.examples) < 5:
                result.examples.append(res)
            if res.outcome in ("corrupt", "not_prefix") and keep_failures > 0:
                keep_failures -= 1
                shutil.copytree(target, workdir / "failures" / f"{mode}-run{result.runs}-cut{i}")
        left -= len(record.snapshots)
        result.runs += 1
        shutil.rmtree(run_dir)
    result.seconds = time.monotonic() - started
    return result


def format_table(results: list[ModeResult]) -> str:
    cols = [
        "mode",
        "cuts",
        "runs",
        "corrupt",
        "not_prefix",
        "cuts_losing_acked",
        "acked_commits_lost",
        "cuts_in_creation",
        "ops_per_run",
        "seconds",
    ]
    rows = [[str(r.as_row()[c]) for c in cols] for r in results]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)
