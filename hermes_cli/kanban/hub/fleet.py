"""Reading the hub: every host's boards, their tasks, events and counts (`hermes kanban hub ...`). Read-only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..core.errors import InvalidValue, NotFound
from ..core.models import iso
from ..store.hub import reads, schema
from ..store.hub.link import HubLink


@contextmanager
def open_hub(url: str) -> Iterator[HubLink]:
    link = HubLink(url)
    try:
        schema.check_readable(link)
        yield link
    finally:
        link.close()


def _ids(link: HubLink, board: str | None) -> list[str] | None:
    if board is None:
        return None
    ids = reads.board_ids(link, board)
    if not ids:
        raise NotFound(f"board {board} is not on {link.where} (see: hermes kanban hub boards)")
    return ids


def _times(row: dict[str, Any], *names: str) -> dict[str, Any]:
    for n in names:
        if row.get(n) is not None:
            row[n] = iso(float(row[n]))
    return row


def boards(url: str) -> list[dict[str, Any]]:
    with open_hub(url) as link:
        out = []
        for r in reads.boards(link):
            r["sync_age"] = None if r["sync_age"] is None else round(float(r["sync_age"]), 1)
            out.append(_times(r, "first_seen", "last_seen", "acked_at"))
        return out


def tasks(url: str, *, board: str | None, statuses: list[str] | None, limit: int) -> list[dict[str, Any]]:
    if limit < 1:
        raise InvalidValue(f"invalid --limit {limit}: must be 1 or more")
    with open_hub(url) as link:
        return [_times(r, "created_at", "updated_at", "completed_at", "lease_expires_at", "retry_at", "synced_at")
                for r in reads.tasks(link, board_ids=_ids(link, board), statuses=statuses, limit=limit)]


def task(url: str, task_id: str, *, board: str | None, events: int = 20) -> list[dict[str, Any]]:
    with open_hub(url) as link:
        found = reads.task(link, task_id, _ids(link, board))
        if not found:
            raise NotFound(f"task {task_id} is not on {link.where} (see: hermes kanban hub list)")
        for r in found:
            evs = reads.events(link, board_ids=[r["board_id"]], task_id=task_id, after=0, limit=events)
            r["events"] = [_event(e) for e in evs]
            _times(r, "created_at", "updated_at", "completed_at", "lease_expires_at", "retry_at", "synced_at")
        return found


def _event(e: dict[str, Any]) -> dict[str, Any]:
    try:
        e["payload"] = json.loads(e["payload"])
    except (TypeError, ValueError):
        pass  # not JSON (written by hand into the hub?): shown as stored
    return _times(e, "created_at", "received_at")


def events(url: str, *, board: str | None, task_id: str | None, after: int, limit: int) -> list[dict[str, Any]]:
    if limit < 1:
        raise InvalidValue(f"invalid --limit {limit}: must be 1 or more")
    with open_hub(url) as link:
        return [_event(e) for e in reads.events(link, board_ids=_ids(link, board), task_id=task_id, after=after,
                                                  limit=limit)]


def stats(url: str, *, board: str | None) -> dict[str, Any]:
    with open_hub(url) as link:
        ids = _ids(link, board)
        rows = reads.stats(link, ids)
        known = {r["board_id"]: r for r in reads.boards(link)}
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        b = known.get(r["board_id"], {})
        entry = per.setdefault(r["board_id"], {"board_id": r["board_id"], "board": b.get("slug"),
                                                "host": b.get("host"), "events": b.get("events", 0),
                                                "by_status": {}})
        entry["by_status"][r["status"]] = int(r["n"])
    totals: dict[str, int] = {}
    for e in per.values():
        for k, v in e["by_status"].items():
            totals[k] = totals.get(k, 0) + v
    hosts = {b["host"] for b in known.values() if ids is None or b["board_id"] in ids}
    return {"boards": list(per.values()), "totals": totals, "hosts": len(hosts),
            "board_count": len(known) if ids is None else len(ids)}
