"""Schema v3 rebuilds `tasks` (SQLite cannot widen a CHECK in place): after the upgrade of a v2 board the new
status and columns work, the old constraints and foreign keys still hold, and nothing of v2 was lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hermes_cli.kanban import Board, StorageError

from .conftest import FIXTURES, dump_board


@pytest.fixture
def v2_board(tmp_path: Path) -> Path:
    dest = tmp_path / "board" / "kanban.db"
    dest.parent.mkdir(mode=0o700)
    shutil.copyfile(FIXTURES / "schema_v2.db", dest)
    dest.chmod(0o600)
    return dest


def test_a_v2_board_upgrades_to_v3_and_speaks_the_new_vocabulary(v2_board: Path) -> None:
    old = dump_board(v2_board)
    assert old["__user_version__"] == 2
    with Board.open(db_path=str(v2_board)) as b:
        assert b.db.value("PRAGMA user_version") >= 3
        assert b.db.value("PRAGMA foreign_keys") == 1  # back on after the rebuild
        assert all(t.assignee is None and t.skills == () for t in b.list_tasks(status=["ready", "todo", "done"]))
        t, _ = b.create_task("parked", triage=True, assignee="researcher")
        assert (t.status, t.assignee) == ("triage", "researcher")
        assert [x.id for x in b.list_tasks(assignee="researcher")] == [t.id]
        # the rebuilt table keeps its constraints, and the tables that reference it keep their foreign keys
        with pytest.raises(StorageError, match="CHECK constraint failed"):
            b.db.write(lambda: b.db.execute("UPDATE tasks SET status = 'doing' WHERE id = ?", (t.id,)))
        with pytest.raises(StorageError, match="FOREIGN KEY constraint failed"):
            b.db.write(lambda: b.db.execute(
                "INSERT INTO links(parent_id, child_id, created_at) VALUES ('t_ffffffffffff', ?, 0)", (t.id,)))
        with pytest.raises(StorageError, match="UNIQUE constraint failed"):
            b.db.write(lambda: b.db.execute("UPDATE tasks SET idempotency_key = 'parser-1' WHERE id = ?", (t.id,)))
        # v2's rows outside tasks are untouched
        assert b.db.rows("SELECT name, cursor FROM subscriptions") == [{"name": "ops-pager", "cursor": 5}]
        assert b.db.value("SELECT epoch FROM dispatcher_lease") == 3
        assert b.db.value("SELECT count(*) FROM runs WHERE result IS NOT NULL OR metadata IS NOT NULL") == 0
        assert b.db.rows("PRAGMA foreign_key_check") == []
