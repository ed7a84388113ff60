"""Board health: `doctor` (every check of DESIGN.md Health), `quick_health` for status lines, and `repair`.

Each finding has a level — `ok`, `info`, `warn` (the board works but needs attention: exit 1) or `fail` (storage
unhealthy: exit 4) — and names the next command to run. doctor never writes to the board: it opens it without
migrating and without the fail-closed quick_check (it runs its own checks and reports them). `DoctorReport.verdict`
is the one-line verdict; the CLI prints it and the TUI's status line shows it (view.health runs doctor itself).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from ..core.errors import CorruptBoard, HermesError, InvalidValue, NotABoard, NotFound, StorageError
from ..core.models import iso
from ..core.paths import BoardPaths
from ..store import dispatch_profiles as profiles_sql
from ..store import engine
from ..store import health as store_health
from ..store import stats as stats_sql
from ..store.connection import UNSAFE_FS, Database, filesystem_type, sqlite_version, version_ok
from ..store.opening import connect
from ..store.schema import LATEST, current_version
from . import backup, spool, sync_status

if TYPE_CHECKING:
    from ..domain.board import Board
    from ..domain.config import DispatchSettings

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
_RANK = {OK: 0, INFO: 0, WARN: 1, FAIL: 2}
#: a WAL larger than this means checkpoints are starved by a long reader (journal_size_limit is 64 MiB)
WAL_WARN_BYTES = 128 << 20
#: a dispatcher lease not refreshed for this long is stale (the dispatcher refreshes every few seconds)
LEASE_STALE_S = 60.0
#: the newest backup should be younger than this, or than twice the board's backup_interval when that is longer
BACKUP_MAX_AGE_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    level: str
    message: str
    next: str | None = None  #: the command to run next (None when nothing is needed)
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "level": self.level, "message": self.message, "next": self.next,
                "data": self.data}


@dataclass(frozen=True, slots=True)
class DoctorReport:
    board: str
    db: str
    findings: tuple[Finding, ...]
    full: bool

    @property
    def level(self) -> str:
        return max((f.level for f in self.findings), key=lambda lv: _RANK[lv], default=OK)

    @property
    def healthy(self) -> bool:
        return _RANK[self.level] == 0

    @property
    def exit_code(self) -> int:
        return {0: 0, 1: 1, 2: 4}[_RANK[self.level]]

    @property
    def verdict(self) -> str:
        """`healthy`, `unhealthy (warn)` or `unhealthy (fail)`: doctor's last line, and the TUI's health field."""
        return "healthy" if self.healthy else f"unhealthy ({self.level})"

    @property
    def worst(self) -> Finding | None:
        """The first finding at the report's level, when that level is a problem (None when healthy)."""
        if self.healthy:
            return None
        return next((f for f in self.findings if f.level == self.level), None)

    def as_dict(self) -> dict[str, Any]:
        return {"board": self.board, "db": self.db, "healthy": self.healthy, "level": self.level, "full": self.full,
                "exit_code": self.exit_code, "findings": [f.as_dict() for f in self.findings]}


def _b(slug: str) -> str:
    """The --board part of a suggested command (none for the default board)."""
    return f" --board {slug}" if slug != "default" else ""


def doctor(paths: BoardPaths, *, full: bool = False, now: float | None = None) -> DoctorReport:
    """Run every health check on the board at `paths`. Never raises for an unhealthy board: that is a finding."""
    now = time.time() if now is None else now
    bo = _b(paths.slug)
    url = engine.board_url(paths)
    if url is not None:
        return _pg_doctor(paths, url, full, now, bo)
    findings: list[Finding] = []

    v = sqlite_version()
    vs = ".".join(map(str, v))
    findings.append(
        Finding("sqlite_version", OK, f"SQLite {vs} (APSW {apsw.apsw_version()})", data={"sqlite": vs})
        if version_ok(v)
        else Finding("sqlite_version", FAIL, f"SQLite {vs} has the WAL-reset corruption bug; need >= 3.51.3 "
                     "(or 3.50.7 / 3.44.6)", "pip install -U apsw", {"sqlite": vs})
    )

    fs = filesystem_type(paths.dir if paths.dir.exists() else paths.dir.parent)
    unsafe = fs.split(".")[0] in UNSAFE_FS or fs.startswith("fuse.")
    findings.append(
        Finding("filesystem", FAIL, f"{paths.dir} is on {fs}, where SQLite locking is unreliable",
                "move the board to a local disk (set HERMES_HOME) and restore a backup there", {"type": fs})
        if unsafe else Finding("filesystem", OK, f"{fs} (local)", data={"type": fs})
    )

    db: Database | None = None
    if not paths.db.exists():
        raise NotFound(f"board database {paths.db} does not exist (see: hermes kanban init)")
    try:
        db = connect(paths, create=False, verify=False)
    except NotABoard:
        raise  # not a board at all: no board health to report, and no restore or repair to suggest
    except StorageError as err:
        nxt = f"hermes kanban restore --latest{bo}" if _has_backup(paths) else f"hermes kanban backups list{bo}"
        findings.append(Finding("database", FAIL, err.message, nxt))
    settings = _settings(paths)
    created_at: list[float] = []  # filled by _db_checks when the board can be read
    if db is not None:
        try:
            findings.extend(_db_checks(db, paths, full, now, bo, settings, created_at))
        finally:
            db.close()

    findings.extend(_spool_checks(paths, bo))
    findings.extend(_backup_checks(paths, now, bo, settings.backup_interval, created_at[0] if created_at else None))
    q = store_health.list_quarantine(paths)
    if q:
        findings.append(Finding("quarantine", INFO, f"{len(q)} quarantined cop{'y' if len(q) == 1 else 'ies'} in "
                                f"{store_health.quarantine_dir(paths)} (evidence; delete when done)",
                                data={"copies": [e.as_dict() for e in q]}))
    return DoctorReport(paths.slug, str(paths.db), tuple(findings), full)


def _pg_doctor(paths: BoardPaths, url: str, full: bool, now: float, bo: str) -> DoctorReport:
    """doctor of a board in PostgreSQL: reachable, server version, schema version, the fleet's dispatchers, stale
    claims (by the server's clock), amcheck of its indexes where available, and this host's spool and backups."""
    from ..store.pg import health as pg_health
    from ..store.pg.database import PgDatabase, redact
    from ..store.pg.opening import current_version as pg_version
    from ..store.pg.opening import schema_exists
    from ..store.pg.schema import LATEST as PG_LATEST

    where = redact(url)
    findings: list[Finding] = []
    settings = _settings(paths)
    created_at: list[float] = []
    db: PgDatabase | None = None
    try:
        db = PgDatabase(url, paths)
    except StorageError as err:
        findings.append(Finding("database", FAIL, err.message, "check the server and the network (reports spool "
                                "on this host meanwhile), then hermes kanban reconcile-completions"
                                f"{bo} --apply", {"engine": "postgres", "url": where}))
    if db is not None:
        try:
            if not schema_exists(db):
                raise NotFound(f"board {paths.slug} does not exist at {where} (see: hermes kanban boards create "
                               f"{paths.slug} --url ...)")
            findings.extend(_pg_db_checks(db, paths, full, bo, settings, created_at, pg_health, pg_version,
                                          PG_LATEST, where))
        except NotFound:
            raise
        except StorageError as err:
            findings.append(Finding("database", FAIL, err.message, f"hermes kanban doctor{bo}"))
        finally:
            db.close()
    findings.extend(_spool_checks(paths, bo))
    findings.extend(_backup_checks(paths, now, bo, settings.backup_interval, created_at[0] if created_at else None))
    return DoctorReport(paths.slug, where, tuple(findings), full)


def _pg_db_checks(db: Any, paths: BoardPaths, full: bool, bo: str, settings: DispatchSettings,
                  created_at: list[float], pg_health: Any, pg_version: Any, latest: int, where: str) -> list[Finding]:
    out: list[Finding] = []
    info = pg_health.server_info(db)
    out.append(Finding("server", OK, f"PostgreSQL {info['version']} at {where}",
                       data={"engine": "postgres", "version": info["version"], "version_num": info["version_num"],
                             "url": where}))
    if info["in_recovery"] or info["read_only"]:
        why = "a hot standby (in recovery)" if info["in_recovery"] else "default_transaction_read_only is on"
        out.append(Finding("writable", FAIL, f"the server at {where} takes no writes ({why}); reports are being "
                           "spooled", "point the board at the primary, then hermes kanban reconcile-completions"
                           f"{bo} --apply"))
    else:
        out.append(Finding("writable", OK, "writable"))
    version = pg_version(db)
    data = {"version": version, "latest": latest}
    if version > latest:
        out.append(Finding("schema", FAIL, f"schema pg v{version} is newer than this hermes (pg v{latest})",
                           "upgrade hermes-kanban", data))
        return out
    out.append(Finding("schema", OK if version == latest else INFO,
                       f"schema pg v{version}" + ("" if version == latest else f"; pg v{latest} is applied on the "
                                                  "next open"), data=data))
    checked = pg_health.amcheck(db, full=full)
    if not checked["available"]:
        out.append(Finding("amcheck", INFO, f"amcheck not available ({checked['reason']}); the indexes were not "
                           "checked", data=checked))
    elif checked["problems"]:
        out.append(Finding("amcheck", FAIL, f"amcheck: {checked['problems'][0]}",
                           f"REINDEX SCHEMA {db.schema} (as the board's owner), then hermes kanban doctor{bo}",
                           checked))
    else:
        out.append(Finding("amcheck", OK, f"amcheck ok ({len(checked['indexes'])} indexes"
                           + (", heapallindexed)" if full else ")"), data=checked))
    regs = pg_health.dispatchers(db) if version >= 2 else []
    out.extend(_dispatcher_findings(db, regs, bo, settings))
    clock = db.clock()
    rest = _lease_checks(db, clock, bo, 2, settings)
    out.extend(f for f in rest if f.check != "dispatcher" or not regs)
    out.append(_gave_up_check(db, bo))
    born = store_health.board_created_at(db)
    if born is not None:
        created_at.append(born)
    return out


def _dispatcher_findings(db: Any, regs: list[dict[str, Any]], bo: str, settings: DispatchSettings) -> list[Finding]:
    """The fleet's registered dispatchers: each one's host, pid and heartbeat age (by the server's clock); one whose
    heartbeat is older than its lease is stale (its host is down or cut off: the others reclaim its runs)."""
    if not regs:
        return []
    shown = [{"id": r["id"], "host": r["host"], "pid": r["pid"], "age_s": round(float(r["age_s"]), 1),
              "lease_s": r["lease_s"], "stale": float(r["age_s"]) > float(r["lease_s"])} for r in regs]
    live = [r for r in shown if not r["stale"]]
    stale = [r for r in shown if r["stale"]]
    text = ", ".join(f"{r['host']} pid {r['pid']} ({r['age_s']:.0f}s ago)" for r in shown[:5])
    data = {"dispatchers": shown, "live": len(live), "stale": len(stale)}
    if not live:
        return [Finding("dispatcher", WARN, f"no live dispatcher: every registration's heartbeat is older than its "
                        f"lease: {text}", f"hermes kanban dispatch{bo}", data)]
    if stale:
        return [Finding("dispatcher", WARN, f"{len(live)} live dispatcher(s), {len(stale)} stale: {text}",
                        f"check the stale hosts (their runs are reclaimed by lease expiry); hermes kanban doctor{bo}",
                        data)]
    return [Finding("dispatcher", OK, f"{len(live)} dispatcher(s): {text}", data=data)]


def _has_backup(paths: BoardPaths) -> bool:
    return any(b.verified for b in backup.list_backups(paths))


def _db_checks(db: Database, paths: BoardPaths, full: bool, now: float, bo: str, settings: DispatchSettings,
               created_at: list[float]) -> list[Finding]:
    out: list[Finding] = []
    conn = db.conn
    restore_next = f"hermes kanban restore --latest{bo}" if _has_backup(paths) else f"hermes kanban backups list{bo}"
    try:
        if full:
            problems = store_health.integrity_check(conn) or store_health.foreign_key_check(conn)
        else:
            # doctor always checks for real (never trusts the cache), and a pass spares the next open its check
            problems = store_health.quick_check_cached(conn, paths, trust_cache=False)
    except (apsw.BusyError, apsw.LockedError) as exc:
        out.append(Finding("integrity", WARN, f"the check could not run: the board is busy ({exc})",
                           f"hermes kanban doctor{bo}"))
        problems = None
    if db.refused:
        out.append(Finding("writable", INFO, "not checked: the board failed its check, so doctor read it through a "
                           "read-only connection (nothing was written to it)"))
    elif conn.readonly("main"):
        out.append(Finding("writable", FAIL, f"{paths.db} is read-only to this process (file flags, permissions or "
                           "a read-only mount); reports are being spooled",
                           "make it writable (chattr -i, chmod u+w, remount rw), then hermes kanban "
                           f"reconcile-completions{bo} --apply"))
    else:
        out.append(Finding("writable", OK, "writable"))
    name = "integrity_check" if full else "quick_check"
    if problems is not None:
        if not problems:
            out.append(Finding("integrity", OK, f"{name} ok" + (" and foreign_key_check ok" if full else "")))
        else:
            index_only = store_health.index_only_damage(conn, problems)
            if index_only is not None:
                out.append(Finding("integrity", FAIL, f"{name}: index-only damage in {', '.join(sorted(index_only))}"
                                   f" ({problems[0]})", f"hermes kanban repair{bo}",
                                   {"problems": problems, "indexes": sorted(index_only)}))
            else:
                out.append(Finding("integrity", FAIL, f"{name}: the board is corrupt ({problems[0]})",
                                   restore_next, {"problems": problems}))
                return out  # the remaining queries would only read garbage
    try:
        ver = current_version(db)
        if ver < LATEST:
            out.append(Finding("schema", INFO, f"schema v{ver}; v{LATEST} is applied on the next write",
                               data={"version": ver}))
        out.extend(_lease_checks(db, now, bo, ver, settings))
        out.append(_gave_up_check(db, bo))
        out.extend(_sync_checks(db, paths, now, bo))
        born = store_health.board_created_at(db)
        if born is not None:
            created_at.append(born)
    except CorruptBoard as err:
        out.append(Finding("integrity", FAIL, err.message, restore_next))
        return out
    wal = paths.sidecars[0]
    size = wal.stat().st_size if wal.exists() else 0
    out.append(
        Finding("wal_size", WARN, f"WAL is {size / (1 << 20):.1f} MiB: checkpoints are starved by a long reader",
                "close long-lived readers (TUI, events --follow), then hermes kanban doctor", {"bytes": size})
        if size > WAL_WARN_BYTES else Finding("wal_size", OK, f"WAL {size / (1 << 20):.1f} MiB", data={"bytes": size})
    )
    return out


def _lease_checks(db: Database, now: float, bo: str, schema: int, settings: DispatchSettings) -> list[Finding]:
    out: list[Finding] = []
    ready = stats_sql.ready_count(db)
    # Only tasks with a command (their own, their assignee's profile command, or, unassigned, the board's
    # default_command) wait for a dispatcher; the others are for pull workers (`hermes kanban claim`), and a board
    # of those needs no dispatcher at all.
    waiting = profiles_sql.waiting_for_dispatcher(db, any_default=settings.default_command is not None,
                                                  profiles=settings.profiles)
    counts = {"ready": ready, "dispatchable": waiting}
    lease = store_health.dispatcher_lease(db) if schema >= 2 else None
    if lease is None:
        if waiting:
            pull = ready - waiting
            out.append(Finding("dispatcher", WARN, f"no dispatcher holds the board lease; {waiting} ready task(s) "
                               "with a command wait" + (f" ({pull} more without one wait for a pull worker)"
                                                        if pull else ""),
                               f"hermes kanban dispatch{bo}", counts))
        elif ready:
            out.append(Finding("dispatcher", INFO, f"no dispatcher running; {ready} ready task(s) have no command "
                               "and wait for a pull worker (hermes kanban claim)", data=counts))
        else:
            out.append(Finding("dispatcher", INFO, "no dispatcher running (nothing is ready)", data=counts))
    else:
        age = now - float(lease["refreshed_at"])
        who = f"{lease['host']} pid {lease['pid']}"
        if age > LEASE_STALE_S:
            out.append(Finding("dispatcher", WARN, f"dispatcher lease held by {who} was last refreshed {age:.0f}s ago",
                               f"hermes kanban dispatch{bo} --break-lock --max-age {int(LEASE_STALE_S)}",
                               {"holder": who, "age_s": round(age, 1)}))
        else:
            out.append(Finding("dispatcher", OK, f"dispatcher {who} (refreshed {age:.0f}s ago)",
                               data={"holder": who, "age_s": round(age, 1)}))
    stale = store_health.stale_claims(db, now)
    if stale:
        ids = ", ".join(s["id"] for s in stale[:5])
        out.append(Finding("stale_claims", WARN, f"{len(stale)} running task(s) with expired leases: {ids}",
                           f"hermes kanban dispatch{bo}  (it reclaims them)",
                           {"tasks": [{"id": s["id"], "run_id": s["run_id"], "lease_expires_at": iso(
                               s["lease_expires_at"])} for s in stale]}))
    else:
        out.append(Finding("stale_claims", OK, "no expired leases"))
    return out


def _gave_up_check(db: Database, bo: str) -> Finding:
    """Tasks that gave up (retries exhausted) stay blocked until a person acts: the board needs attention (warn,
    exit 1), like a spool backlog. A task a person or its worker blocked on purpose is not reported."""
    tasks = store_health.given_up(db)
    if not tasks:
        return Finding("gave_up", OK, "no task gave up", data={"tasks": []})
    shown = ", ".join(f"{t['id']} ({t['last_outcome'] or 'failed'} after {t['attempts']} attempt(s))"
                      for t in tasks[:5])
    more = f" and {len(tasks) - 5} more" if len(tasks) > 5 else ""
    first = tasks[0]["id"]
    return Finding("gave_up", WARN, f"{len(tasks)} task(s) gave up and stay blocked until a person acts: "
                   f"{shown}{more}",
                   f"hermes kanban show {first}{bo}, then hermes kanban unblock {first}{bo} (retry it) or "
                   f"hermes kanban archive {first}{bo}",
                   {"tasks": [{"id": t["id"], "title": t["title"], "attempts": t["attempts"],
                               "last_outcome": t["last_outcome"]} for t in tasks]})


def _sync_checks(db: Database, paths: BoardPaths, now: float, bo: str) -> list[Finding]:
    """`sync: N pending, oldest Xs, last error ...` per hub this board syncs to (none without a hub)."""
    return [Finding("sync", WARN if sync_status.needs_attention(s) else OK, sync_status.line(s),
                    f"hermes kanban sync{bo} --once  (see docs/hub.md)", s)
            for s in sync_status.summary(db, paths, now)]


def _spool_checks(paths: BoardPaths, bo: str) -> list[Finding]:
    reports, invalid = spool.pending(paths)
    out = []
    if reports:
        out.append(Finding("spool", WARN, f"{len(reports)} report(s) wait in {paths.spool_dir}",
                           f"hermes kanban reconcile-completions{bo}  (then --apply)",
                           {"pending": len(reports)}))
    else:
        out.append(Finding("spool", OK, "spool empty", data={"pending": 0}))
    if invalid:
        out.append(Finding("spool_files", WARN, f"{len(invalid)} file(s) in the spool are not valid reports: "
                           f"{invalid[0]['file']} ({invalid[0]['problem']})",
                           f"hermes kanban reconcile-completions{bo} --apply  (moves them to "
                           f"{paths.spool_dir / spool.INVALID}), then inspect them", {"invalid": invalid}))
    set_aside = spool.set_aside_files(paths)
    if set_aside:
        out.append(Finding("spool_invalid", WARN, f"{len(set_aside)} file(s) that were not valid reports wait in "
                           f"{paths.spool_dir / spool.INVALID} (a worker's report may be in one)",
                           "read each file and its .reason.json, settle the task by hand, then delete them",
                           {"files": set_aside}))
    return out


def _backup_checks(paths: BoardPaths, now: float, bo: str, interval: float | None,
                   created_at: float | None) -> list[Finding]:
    backups = [b for b in backup.list_backups(paths) if b.verified]
    max_age = backup_max_age(interval)
    if not backups:
        # A board younger than the age a backup may reach has lost no more than a board whose backup is that old:
        # not yet overdue (info); past that age, no backup at all is a warning.
        if created_at is not None and now - created_at <= max_age:
            young = now - created_at
            return [Finding("backup", INFO, f"no backup yet (the board is {young / 60:.0f} min old; one is due "
                            f"within {max_age / 3600:.0f} h of its creation)", f"hermes kanban backup{bo}",
                            {"board_created_at": created_at, "max_age_s": max_age, "backup_interval_s": interval})]
        return [Finding("backup", WARN, "no verified backup", f"hermes kanban backup{bo}",
                        {"board_created_at": created_at, "max_age_s": max_age, "backup_interval_s": interval})]
    age = now - backups[0].created_at
    data = {"latest": str(backups[0].path), "age_s": round(age, 1), "count": len(backups),
            "backup_interval_s": interval, "max_age_s": max_age}
    if age > max_age:
        return [Finding("backup", WARN, f"newest backup is {age / 3600:.0f}h old", f"hermes kanban backup{bo}", data)]
    return [Finding("backup", OK, f"newest backup {age / 60:.0f} min old ({len(backups)} kept)", data=data)]


def backup_max_age(interval: float | None) -> float:
    """The age past which doctor warns: 24 h, or twice the dispatcher's backup interval when that is longer (a
    board backed up every 2 days is not overdue after 25 h). Not tighter than 24 h for short intervals: doctor
    cannot tell whether a dispatcher (the one taking them) runs at all, nor with which --backup-interval flag."""
    return BACKUP_MAX_AGE_S if interval is None else max(BACKUP_MAX_AGE_S, 2 * interval)


def _settings(paths: BoardPaths) -> DispatchSettings:
    """The board's dispatcher settings (config.toml, else the defaults): its backup_interval and default_command.
    The defaults when the config file cannot be read (the dispatcher itself refuses such a file with its own
    error)."""
    # lazily: board_config imports tomllib, and `hermes kanban --help` loads this module to list doctor
    from ..domain.config import DispatchSettings, load_settings

    try:
        return load_settings(paths)
    except HermesError:
        return DispatchSettings()


# -- quick health for status lines -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QuickHealth:
    level: str
    text: str
    spool: int
    stale_claims: int

    @property
    def ok(self) -> bool:
        """True unless storage is unhealthy (warnings such as a spool backlog do not count)."""
        return self.level != FAIL

    @property
    def summary(self) -> str:
        return self.text

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "ok": self.ok, "text": self.text, "spool": self.spool,
                "stale_claims": self.stale_claims}


def quick_health(board: Board) -> QuickHealth:
    """A cheap health summary for an open board (the TUI status line, the dispatcher's spool drain).

    quick_check runs only when the db file changed since the last good check (store/health.py cache), so a quiet
    board costs a stat and two small queries.
    """
    paths = board.paths
    parts: list[str] = []
    level = OK
    n_spool = spool.backlog(paths)
    if engine.is_postgres(board.db):
        # No file to check: the server keeps its own pages whole. Stale claims by the server's clock.
        try:
            stale = len(store_health.stale_claims(board.db, board.db.clock()))
        except HermesError as err:
            return QuickHealth(FAIL, err.message, n_spool, 0)
        parts = ([f"{n_spool} spooled"] if n_spool else []) + (
            [f"{stale} stale claim{'s' if stale != 1 else ''}"] if stale else [])
        return QuickHealth(WARN if parts else OK, "; ".join(parts) or "healthy", n_spool, stale)
    if board.db.conn.readonly("main"):
        return QuickHealth(FAIL, "read-only: reports are being spooled (see: hermes kanban doctor)", n_spool, 0)
    try:
        problems = store_health.quick_check_cached(board.db.conn, paths)
        if problems:
            return QuickHealth(FAIL, f"corrupt: {problems[0]} (see: hermes kanban doctor)", n_spool, 0)
        stale = len(store_health.stale_claims(board.db, time.time()))
    except (apsw.BusyError, apsw.LockedError):
        stale = 0  # busy is never unhealthy; the next call checks again
    except HermesError as err:
        return QuickHealth(FAIL, err.message, n_spool, 0)
    if n_spool:
        level = WARN
        parts.append(f"{n_spool} spooled")
    if stale:
        level = WARN
        parts.append(f"{stale} stale claim{'s' if stale != 1 else ''}")
    return QuickHealth(level, "; ".join(parts) or "healthy", n_spool, stale)


# -- repair ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RepairResult:
    status: str  #: ok (nothing to do) | repaired
    db: str
    problems_before: tuple[str, ...] = ()
    reindexed: tuple[str, ...] = ()
    quarantine: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "db": self.db, "problems_before": list(self.problems_before),
                "reindexed": list(self.reindexed), "quarantine": self.quarantine, "integrity_check": "ok"}


def repair(paths: BoardPaths) -> RepairResult:
    """Heal index-only damage with REINDEX and re-check; refuse anything else (exit 4) with the way out.

    A quarantine copy is taken before anything is changed.
    """
    if engine.board_url(paths) is not None:
        raise InvalidValue(f"repair is for SQLite boards; board {paths.slug} is in PostgreSQL, which keeps its own "
                           f"pages (see: hermes kanban doctor{_b(paths.slug)} --full, which runs amcheck)")
    if not paths.db.exists():
        raise NotFound(f"board database {paths.db} does not exist (see: hermes kanban init)")
    bo = _b(paths.slug)
    restore_hint = (f"hermes kanban restore --latest{bo}" if _has_backup(paths)
                    else f"hermes kanban backups list{bo}")
    db = connect(paths, create=False, verify=False)
    try:
        problems = store_health.integrity_check(db.conn)
        if not problems:
            problems = store_health.foreign_key_check(db.conn)
            if problems:
                raise CorruptBoard(f"board {paths.db} has broken references ({problems[0]}); REINDEX cannot fix "
                                   f"that, repair refused (see: {restore_hint})")
            return RepairResult("ok", str(paths.db))
        indexes = store_health.index_only_damage(db.conn, problems)
        q = store_health.quarantine_via_backup(db.conn, paths, f"before repair: {problems[0]}")
        if indexes is None:
            raise CorruptBoard(
                f"board {paths.db} has damage beyond its indexes ({problems[0]}); repair refused, nothing changed"
                + (f"; a copy is in {q}" if q else "") + f" (see: {restore_hint})"
            )
        if db.refused:
            # The check ran through a read-only look (nothing written so far); REINDEX needs a read-write
            # connection, opened only now that the damage is known to be confined to indexes.
            db.close()
            db = connect(paths, create=False, verify=False, probe=False)
        try:
            store_health.reindex(db, indexes)
        except CorruptBoard as err:
            raise CorruptBoard(
                f"REINDEX of {', '.join(sorted(indexes))} failed on {paths.db} ({err.message}); repair refused "
                f"(see: {restore_hint})"
            ) from err
        after = store_health.integrity_check(db.conn) or store_health.foreign_key_check(db.conn)
        if after:
            raise CorruptBoard(f"board {paths.db} still fails integrity_check after REINDEX ({after[0]}) "
                               f"(see: {restore_hint})")
    finally:
        db.close()
    store_health.forget_check(paths)
    return RepairResult("repaired", str(paths.db), tuple(problems), tuple(sorted(indexes)),
                        None if q is None else str(q))


def quarantine_path(paths: BoardPaths) -> Path:
    return store_health.quarantine_dir(paths)
