"""A report the board cannot take keeps all of itself in the spool: `complete --result --metadata` and
`block --kind` are applied by reconcile-completions exactly as the command would have applied them."""

from __future__ import annotations

import json

from hermes_cli.kanban import Board
from hermes_cli.kanban.durability import spool

from .conftest import HOLD_WRITE_LOCK, checkpoint_and_close, hermes, stop


def test_result_metadata_and_block_kind_survive_the_spool(paths, helper) -> None:  # type: ignore[no-untyped-def]
    with Board.open() as b:
        parent, _ = b.create_task("parent")
        done, _ = b.create_task("report with a result")
        waits, _ = b.create_task("waits for its parent", parents=[parent.id])
        b.promote([waits.id], force=True)
        c_done, c_wait = b.claim(done.id), b.claim(waits.id)
        assert c_done is not None and c_wait is not None
        db = b.paths.db
    checkpoint_and_close(db)
    holder = helper(HOLD_WRITE_LOCK, str(db), ready="locked")
    busy = {"HERMES_KANBAN_BUSY_TIMEOUT_MS": "50"}
    r1 = hermes("complete", done.id, "--run-id", str(c_done.run_id), "--result", "3 sources",
                "--metadata", '{"sources": 3}', "--json", env=busy)
    r2 = hermes("block", waits.id, "parent", "not", "done", "--run-id", str(c_wait.run_id), "--kind", "dependency",
                "--json", env=busy)
    stop(holder)
    for r in (r1, r2):
        assert r.rc == 0 and json.loads(r.out)["spooled"] is True, r
        assert "not kept" not in r.err
    reports, invalid = spool.pending(paths)
    assert invalid == []
    assert {r.task_id: r.extra for r in reports} == {
        done.id: {"result": "3 sources", "metadata": {"sources": 3}},
        waits.id: {"block_kind": "dependency"},
    }
    applied = hermes("reconcile-completions", "--apply", "--json")
    assert applied.rc == 0, applied
    with Board.open() as b:
        t = b.get_task(done.id)
        run = b.runs(done.id)[-1]
        assert (t.status, t.result, run.id, run.result, run.metadata) == (
            "done", "3 sources", c_done.run_id, "3 sources", {"sources": 3})
        w = b.get_task(waits.id)
        assert (w.status, w.block_kind) == ("todo", "dependency")
        b.complete(parent.id)
        assert b.get_task(waits.id).status == "ready"


def test_a_spooled_report_with_bad_extras_is_not_a_report(paths) -> None:  # type: ignore[no-untyped-def]
    with Board.open() as b:
        t, _ = b.create_task("t")
    rep, wrote = spool.spool_report(paths, "complete", t.id, None, summary="s", extra={"result": "r"})
    assert wrote and rep.extra == {"result": "r"}
    data = json.loads(rep.path.read_text())
    data["extra"] = {"block_kind": "dependency"}  # a complete report cannot carry a block kind
    rep.path.chmod(0o600)
    rep.path.write_text(json.dumps(data))
    assert spool.read_report(rep.path) == "a complete report cannot carry block_kind"
