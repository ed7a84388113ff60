"""The few places where the store's SQL (written for SQLite) differs on PostgreSQL, rewritten once per statement.

The store writes portable SQL wherever both engines agree (RETURNING, ON CONFLICT ... DO UPDATE, recursive CTEs, CASE);
what is left is mechanical: `?` placeholders become `%s` (and a literal `%` becomes `%%`, psycopg's escape), and
`LIKE` becomes `ILIKE` (SQLite's LIKE ignores ASCII case, PostgreSQL's does not). Quoted text is never touched.
"""

from __future__ import annotations

import functools
import re

_WORD_LIKE = re.compile(r"\bLIKE\b")


@functools.lru_cache(maxsize=2048)
def to_postgres(sql: str, with_params: bool = True) -> str:
    """`sql` for psycopg. Without parameters psycopg sends the text as it is (several statements may be run at
    once, e.g. a migration), so `%` is only escaped when parameters go with it."""
    out: list[str] = []
    chunk: list[str] = []
    quoted = False

    def flush() -> None:
        text = "".join(chunk)
        out.append(text if quoted else _WORD_LIKE.sub("ILIKE", text))
        chunk.clear()

    for ch in sql:
        if ch == "'":
            if not quoted:
                flush()
                quoted = True
                chunk.append(ch)
                continue
            chunk.append(ch)
            flush()  # a doubled '' is two quotes in a row: the second reopens the literal, which is the same text
            quoted = False
            continue
        if ch == "%" and with_params:
            chunk.append("%%")
        elif ch == "?" and not quoted:
            chunk.append("%s")
        else:
            chunk.append(ch)
    flush()
    return "".join(out)
