"""The doorbell rings after COMMIT, never before: a reader woken by a ring that reads the events table at once must
already see the event that rang.

A real reader in another process cannot show this on its own: it wakes, then reads, and by then a writer that rang
too early has usually committed anyway, so the test would pass by luck. So the ring itself is observed: `ring` is
wrapped (the real one still runs and still wakes a real FIFO reader) and, at the instant of the ring, an independent
read-only connection (what a woken reader in another process has) reads the newest event id. With the ring before
COMMIT, that connection still sees the old snapshot and this test fails.
"""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.live import doorbell
from hermes_cli.kanban.live.doorbell import Doorbell


def newest_event_id_seen_by_another_connection(db: Path) -> int:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchall()[0][0])
    finally:
        conn.close()


def test_a_reader_woken_by_the_ring_already_sees_the_event(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    seen_at_ring: list[int] = []
    real_ring = doorbell.ring

    def ring_and_look(notify_dir: Path) -> int:
        seen_at_ring.append(newest_event_id_seen_by_another_connection(board.paths.db))
        return real_ring(notify_dir)

    monkeypatch.setattr(doorbell, "ring", ring_and_look)

    def check(step: str) -> None:
        newest = board.events()[-1].id
        assert seen_at_ring, f"{step}: the write did not ring"
        assert bell.wait(0), f"{step}: the real ring did not reach the reader"
        assert seen_at_ring[-1] == newest, (
            f"{step}: at the ring another connection saw event {seen_at_ring[-1]}, not {newest}: "
            "the doorbell rang before COMMIT"
        )
        seen_at_ring.clear()

    with Doorbell(board.paths.notify_dir, "woken") as bell:
        task, _ = board.create_task("rings once")
        check("create")
        claim = board.claim(task.id, worker="w")
        assert claim is not None
        check("claim")
        board.complete(task.id, claim.run_id, summary="done")
        check("complete")
