"""`dump_board(path)`: a whole board as plain data, to assert that a rejected command changed nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw


def dump_board(db_path: Path | str) -> dict[str, Any]:
    """Every row of every table (sqlite_sequence included), the schema and the user_version, read through a
    separate read-only connection."""
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
        out: dict[str, Any] = {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
        out["__schema__"] = conn.execute("SELECT type, name, sql FROM sqlite_schema ORDER BY type, name").fetchall()
        out["__user_version__"] = conn.execute("PRAGMA user_version").fetchall()[0][0]
        return out
    finally:
        conn.close()
