"""Integrity checks of an SQLite board file (quick_check, integrity_check, foreign keys, index-only damage, REINDEX):
the SQLite calls both the fail-closed open (store/health.py) and backups (store/backup_files.py) use."""

from __future__ import annotations

import re

import apsw

from .connection import Database

#: how many problems a check reports at most
CHECK_LIMIT = 100

_INDEX_MSG = re.compile(
    r"^(?:row \d+ missing from index (?P<a>\S+)|wrong # of entries in index (?P<b>\S+)"
    r"|non-unique entry in UNIQUE index (?P<c>\S+))$"
)
_TREE_MSG = re.compile(r"^Tree (?P<root>\d+) page \d+")


def int_value(conn: apsw.Connection, sql: str) -> int:
    """First column of the first row as an int, for queries SQLite answers with an integer (PRAGMA page_size,
    page_count, user_version; count(*); coalesce(max(id), 0)). A NULL raises TypeError, as int(None) would."""
    value = conn.execute(sql).fetchall()[0][0]
    if value is None:
        raise TypeError(f"{sql!r} returned NULL where SQLite always returns an integer")
    return int(value)


# -- checks ----------------------------------------------------------------------------------------------------------
def _check(conn: apsw.Connection, pragma: str, limit: int) -> list[str]:
    """Run quick_check/integrity_check. Returns the problems ([] when ok). CorruptError/NotADBError raised by the
    check itself (SQLite gives up on some damage) become the one problem; busy/locked propagate (not corruption)."""
    try:
        rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}({int(limit)})")]
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        return [f"{pragma}: {exc}"]
    problems: list[str] = []
    for r in rows:
        for line in r.splitlines():
            line = line.strip()
            if line and line != "ok" and not line.startswith("*** in database"):
                problems.append(line)
    return problems


def quick_check(conn: apsw.Connection, limit: int = CHECK_LIMIT) -> list[str]:
    return _check(conn, "quick_check", limit)


def integrity_check(conn: apsw.Connection, limit: int = CHECK_LIMIT) -> list[str]:
    return _check(conn, "integrity_check", limit)


def foreign_key_check(conn: apsw.Connection) -> list[str]:
    try:
        rows = conn.execute("PRAGMA foreign_key_check").fetchall()
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        return [f"foreign_key_check: {exc}"]
    return [f"{table} row {rowid} refers to a missing {parent} row" for table, rowid, parent, _fk in rows]


def index_only_damage(conn: apsw.Connection, problems: list[str]) -> set[str] | None:
    """The damaged index names if every problem is confined to (non-automatic) indexes, else None.

    Index damage shows up as "row N missing from index X", "wrong # of entries in index X", "non-unique entry in
    UNIQUE index X", or as page errors of a tree whose root page belongs to an index.
    """
    if not problems:
        return set()
    try:
        rows = conn.execute("SELECT name, rootpage FROM sqlite_schema WHERE type = 'index'").fetchall()
    except apsw.Error:
        return None
    by_root = {int(root): str(name) for name, root in rows if root}
    names = {str(name) for name, _ in rows}
    found: set[str] = set()
    for p in problems:
        m = _INDEX_MSG.match(p)
        if m:
            name = m.group("a") or m.group("b") or m.group("c")
            if name not in names:
                return None
            found.add(name)
            continue
        t = _TREE_MSG.match(p)
        if t and int(t.group("root")) in by_root:
            found.add(by_root[int(t.group("root"))])
            continue
        return None
    return found


def reindex(db: Database, names: set[str]) -> None:
    """Rebuild the named indexes (all of them when `names` is empty) in one write transaction."""

    def tx() -> None:
        if not names:
            db.execute("REINDEX")
        for name in sorted(names):
            db.execute(f'REINDEX "{name.replace(chr(34), chr(34) * 2)}"')

    db.write(tx)
