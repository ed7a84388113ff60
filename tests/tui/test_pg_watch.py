"""The TUI on a PostgreSQL board: its watcher listens (LISTEN/NOTIFY, live/pg_listen.py), so a completion written by
another process shows as a toast, as on a SQLite board with its FIFO doorbell."""

from __future__ import annotations

import os
import subprocess
import sys

from hermes_cli.kanban.live.pg_listen import PgBell

from .conftest import SIZE, RecordingApp, opened, until


async def test_a_toast_when_another_process_completes_a_task_on_a_postgresql_board(
        pg_url: str, seeded: dict[str, str]) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await opened(app, pilot)
        await until(pilot, lambda: app._watch_reader is not None, what="the watcher")
        reader = app._watch_reader
        assert reader is not None and isinstance(reader.doorbell, PgBell) and reader.doorbell.mode == "listen"
        p = subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", "complete", seeded["ready3"],
                            "--summary", "reconciled 1,204 invoices"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ))
        assert p.returncode == 0, p.stderr
        await until(pilot, lambda: any(seeded["ready3"] in t[0] for t in app.toasts), what="the toast")
        assert reader.doorbell.received >= 1, "woken by the fallback poll, not by a notification"
