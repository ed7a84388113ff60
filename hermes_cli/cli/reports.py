"""Worker reports (complete, block): the writes that must never be lost.

The durability layer adds the spool fallback here: if the board cannot be written, the report is written to the
board's spool and the command exits 0 with `"spooled": true`.
"""

from __future__ import annotations

from .common import emit, open_board


def report(kind: str, board: str | None, task_id: str, run_id: int | None, *, summary: str | None, force: bool,
           as_json: bool) -> None:
    with open_board(board) as b:
        if kind == "complete":
            t = b.complete(task_id, run_id, summary=summary, force=force)
        else:
            t = b.block(task_id, run_id, reason=summary, force=force)
    emit(as_json, {**t.as_dict(), "spooled": False}, f"{t.id} {t.status}")
