"""Issue 9 item 6: a worker's report is never lost to a missing board, a worker-facing command never creates a
board, an operator command that creates one at a pinned path says so, and a pinned path that is not a board gets
nothing written next to it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import apsw

from hermes_cli.kanban import Board
from hermes_cli.kanban.core.paths import boards_root, hermes_home

from .conftest import hermes


def listing(d: Path) -> dict[str, str]:
    """Every entry under `d` (recursively) with a digest of its content: any file written or created shows."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), d)] = "dir"
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_worker_reports_survive_boards_rm_and_never_create_a_board():
    assert hermes("boards", "create", "proj").rc == 0
    with Board.open("proj") as b:
        t1, _ = b.create_task("one")
        t2, _ = b.create_task("two")
        c1, c2 = b.claim(t1.id, worker="w1"), b.claim(t2.id, worker="w2")
        assert c1 is not None and c2 is not None
        db = b.paths.db
    worker = {"HERMES_KANBAN_DB": str(db), "HERMES_KANBAN_BOARD": "proj"}
    assert hermes("boards", "rm", "proj").rc == 0
    assert not db.exists()

    r = hermes("complete", "--summary", "done while the board was gone", "--json",
               env={**worker, "HERMES_KANBAN_TASK": t1.id, "HERMES_KANBAN_RUN_ID": str(c1.run_id)})
    assert r.rc == 0, r
    assert r.json["spooled"] is True
    assert f"board database {db} does not exist" in r.err and "spooled to" in r.err
    assert len(r.err.strip().splitlines()) == 1, r.err
    spooled = Path(r.json["spool_file"])
    assert spooled.exists() and hermes_home() in spooled.parents and not db.parent.exists()

    r = hermes("block", "no board any more", "--json",
               env={**worker, "HERMES_KANBAN_TASK": t2.id, "HERMES_KANBAN_RUN_ID": str(c2.run_id)})
    assert r.rc == 0 and r.json["spooled"] is True, r

    r = hermes("heartbeat", "--json", env={**worker, "HERMES_KANBAN_TASK": t2.id,
                                            "HERMES_KANBAN_RUN_ID": str(c2.run_id)})
    assert r.rc == 4, r
    assert r.err.startswith(f"error: board database {db} does not exist") and len(r.err.strip().splitlines()) == 1
    assert r.json["error"]["code"] == "board_missing"
    assert not db.exists() and not db.parent.exists(), "a worker-facing command created a board"

    # the board comes back (moved back from _archived): its spool backlog includes the reports, and they apply
    archived = next((boards_root() / "_archived").iterdir())
    os.rename(archived, db.parent)
    r = hermes("reconcile-completions", "--apply", "--board", "proj", "--json")
    assert r.rc == 0, r
    with Board.open("proj") as b:
        assert b.get_task(t1.id).status == "done"
        assert b.get_task(t1.id).summary == "done while the board was gone"
        assert b.get_task(t2.id).status == "blocked"


def test_operator_command_creating_a_pinned_board_says_so(tmp_path):
    db = tmp_path / "typo" / "boadr.db"
    r = hermes("list", env={"HERMES_KANBAN_DB": str(db)})
    assert r.rc == 0, r
    assert r.err == f"note: created new board at {db}\n"
    r = hermes("list", env={"HERMES_KANBAN_DB": str(db)})
    assert r.rc == 0 and r.err == ""


FOREIGN_COMMANDS = [
    ["list"], ["create", "x"], ["init"], ["doctor"], ["repair"], ["backup"], ["reconcile-completions"],
    ["heartbeat", "t_000000000000", "--run-id", "1"], ["show", "t_000000000000"], ["stats"],
]


def test_a_pinned_path_that_is_not_a_board_gets_nothing_written_next_to_it(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    conn = apsw.Connection(str(etc / "places.sqlite"))
    conn.execute("CREATE TABLE moz_places(id INTEGER PRIMARY KEY, url TEXT); INSERT INTO moz_places(url) VALUES ('x')")
    conn.close()
    (etc / "empty.db").write_bytes(b"")
    before = listing(etc)
    for name in ("passwd", "places.sqlite", "empty.db"):
        target = etc / name
        env = {"HERMES_KANBAN_DB": str(target)}
        for args in FOREIGN_COMMANDS:
            r = hermes(*args, env=env)
            assert r.rc == 4, (name, args, r)
            assert r.err.startswith(f"error: board database {target} is not a hermes kanban board"), (name, args, r.err)
            assert "restore" not in r.err and "repair" not in r.err, (name, args, r.err)
            assert listing(etc) == before, (name, args)
        r = hermes("complete", "t_000000000000", "--run-id", "1", "--json", env=env)
        assert r.rc == 0 and r.json["spooled"] is True, (name, r)
        assert hermes_home() in Path(r.json["spool_file"]).parents
        assert listing(etc) == before, (name, "complete")
