"""The event log: `events` prints events after a cursor."""

from __future__ import annotations

import click

from ..kanban.models import iso
from .common import command, common, emit, open_board


@command("events")
@click.option("--after", type=int, default=0, show_default=True, metavar="ID", help="Only events after this id.")
@click.option("--task", "task_id", default=None, metavar="ID", help="Only this task's events.")
@click.option("--kinds", default=None, metavar="K1,K2", help="Only these kinds, comma-separated.")
@click.option("--limit", type=int, default=None, metavar="N", help="At most N events.")
@common
def kanban_events(after: int, task_id: str | None, kinds: str | None, limit: int | None, board: str | None,
                  as_json: bool) -> None:
    """Print the event log (every change to the board, in commit order).

    Example:

    \b
        hermes kanban events --after 120 --kinds completed,blocked --json
    """
    kind_list = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else None
    with open_board(board) as b:
        evs = b.events(after, task_id=task_id, kinds=kind_list, limit=limit)
    emit(as_json, [e.as_dict() for e in evs],
         lambda: "\n".join(f"{e.id:>6} {iso(e.created_at)} {e.kind:<16} {e.task_id or '-'} {_brief(e.payload)}"
                           for e in evs) or "no events")


def _brief(payload: dict[str, object]) -> str:
    return " ".join(f"{k}={v}" for k, v in payload.items() if v not in (None, [], ""))
