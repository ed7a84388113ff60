"""The TUI driven with App.run_test() and Pilot on real boards: navigation, filter, actions, details, toasts from
other processes, board switching, the status line, and the error screen for corrupt boards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.live.readers import get_subscription
from hermes_cli.kanban.store import leases
from hermes_cli.kanban.views import snapshot as kview
from tui.screens.dialogs import BoardSwitcher, ConfirmScreen, CreateTaskScreen, HelpScreen, PromptScreen
from tui.screens.error import BoardErrorScreen
from tui.widgets.column import TaskColumn
from tui.widgets.detail import DetailPane
from tui.widgets.status import StatusLine

from .conftest import SIZE, RecordingApp, opened, plain, until


def counts(app: RecordingApp) -> dict[str, int]:
    return {c.status: c.count for c in app.query(TaskColumn)}


async def test_columns_show_every_status_with_counts(seeded: dict[str, str]) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        assert counts(app) == {"triage": 0, "todo": 1, "ready": 3, "running": 1, "review": 1, "blocked": 1, "done": 1,
                               "archived": 1}
        ready = app.column("ready")
        assert [ready.task_at(i).id for i in range(3)] == [seeded["ready"], seeded["ready2"], seeded["ready3"]]
        assert ready.border_subtitle == "3"
        assert app.column("archived").has_class("-hidden")
        assert "7 tasks" not in plain(app.query_one(StatusLine).render())  # archived are not counted
        assert "8 tasks" in plain(app.query_one(StatusLine).render())


async def test_keyboard_navigation(seeded: dict[str, str]) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        assert app.focused is app.column("ready")
        assert app.selected is not None and app.selected.id == seeded["ready"]
        await pilot.press("down", "j")
        assert app.selected.id == seeded["ready3"]
        await pilot.press("up")
        assert app.selected.id == seeded["ready2"]
        await pilot.press("end")
        assert app.selected.id == seeded["ready3"]
        await pilot.press("home")
        assert app.selected.id == seeded["ready"]
        await pilot.press("right")
        assert app.focused is app.column("running") and app.selected.id == seeded["running"]
        await pilot.press("l", "l")
        assert app.focused is app.column("blocked") and app.selected.id == seeded["blocked"]
        await pilot.press("h", "h", "h", "left")
        assert app.focused is app.column("todo") and app.selected.id == seeded["todo"]
        await pilot.press("v")  # show archived
        await pilot.press("left")  # wraps around to the last column
        assert app.focused is app.column("archived")
        await until(pilot, lambda: app.selected is not None and app.selected.id == seeded["archived"])
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_filter_by_text_and_tenant(seeded: dict[str, str]) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        await pilot.press("slash")
        await pilot.press(*"deploy")
        await pilot.press("enter")
        await until(pilot, lambda: counts(app)["ready"] == 1, what="the filter to apply")
        assert sum(counts(app).values()) == 1
        assert app.column("ready").task_at(0).id == seeded["ready2"]
        assert "filter: deploy" in plain(app.query_one(StatusLine).render())
        # an id prefix matches too; tenant:NAME filters on the tenant
        app.query_one("#filter").value = "tenant:billing"
        await pilot.press("slash", "enter")
        await until(pilot, lambda: app.flt == kview.Filter(tenant="billing"))
        await until(pilot, lambda: sum(counts(app).values()) == 1)
        assert app.column("ready").task_at(0).id == seeded["ready3"]
        await pilot.press("escape")
        await until(pilot, lambda: sum(counts(app).values()) == 9, what="the filter to clear")
        assert not app.flt.active


async def test_complete_a_task_from_the_tui(seeded: dict[str, str], board: Board) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await opened(app, pilot)
        await pilot.press("down")
        assert app.selected.id == seeded["ready2"]
        await pilot.press("c")
        await until(pilot, lambda: board.get_task(seeded["ready2"]).status == TaskStatus.DONE, what="the complete")
        await until(pilot, lambda: counts(app)["done"] == 2 and counts(app)["ready"] == 2)
        # the completion comes back through the doorbell as a toast with the task's title
        await until(pilot, lambda: any(t[0] == f"✔ completed · {seeded['ready2']}" for t in app.toasts))
        toast = next(t for t in app.toasts if t[0] == f"✔ completed · {seeded['ready2']}")
        assert toast[1].startswith("deploy the new parser")


async def test_completing_a_running_task_asks_first(seeded: dict[str, str], board: Board) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        app.column("running").focus()
        await pilot.pause()
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert board.get_task(seeded["running"]).status == TaskStatus.RUNNING
        await pilot.press("c")
        await pilot.press("y")
        await until(pilot, lambda: board.get_task(seeded["running"]).status == TaskStatus.DONE)
        assert board.detail(seeded["running"]).runs[-1].outcome == "completed"


async def test_toast_when_another_process_completes_a_task(seeded: dict[str, str]) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await opened(app, pilot)
        p = subprocess.run([sys.executable, "-m", "hermes_cli.main", "kanban", "complete", seeded["ready3"],
                            "--summary", "reconciled 1,204 invoices"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ))
        assert p.returncode == 0, p.stderr
        await until(pilot, lambda: any(seeded["ready3"] in t[0] for t in app.toasts), what="the toast")
        assert (f"✔ completed · {seeded['ready3']}", "backfill invoices\nreconciled 1,204 invoices",
                "information") in app.toasts
        await until(pilot, lambda: counts(app)["ready"] == 2)


async def test_toasts_for_blocked_crashed_and_gave_up(board: Board) -> None:
    crash = board.create_task("flaky job", max_retries=0)[0]
    stuck = board.create_task("needs a human")[0]
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        with Board.open() as other:
            claim = other.claim(crash.id, worker="w")
            assert claim is not None
            other.finish_run(crash.id, claim.run_id, "crashed", summary="segfault", exit_code=139)
            other.block(stuck.id, reason="waiting on legal")
        await until(pilot, lambda: len([t for t in app.toasts if "·" in t[0]]) >= 3, what="three toasts")
        by_title = {t[0]: t for t in app.toasts}
        assert by_title[f"✖ crashed · {crash.id}"][1:] == ("flaky job\nsegfault, exit 139, no retries left", "error")
        assert by_title[f"✖ gave up · {crash.id}"][1] == "flaky job\ngave up after 1 attempts (last: crashed)"
        assert by_title[f"⏸ blocked · {stuck.id}"][1:] == ("needs a human\nwaiting on legal", "warning")


async def test_detail_pane_shows_body_runs_log_tail_and_events(seeded: dict[str, str], board: Board) -> None:
    logs = board.paths.logs_dir
    logs.mkdir(mode=0o700, exist_ok=True)
    (logs / f"{seeded['done']}.log").write_text("".join(f"line {i}\n" for i in range(40)) + "\x1b[31mred\x1b[0m\n")
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        app.column("done").focus()
        await pilot.pause()
        await pilot.press("enter")
        pane = app.query_one(DetailPane)
        await until(pilot, lambda: pane.task_id == seeded["done"], what="the detail pane")
        assert pane.has_class("-open")
        text = plain(pane.query_one("#detail-body").content)
        assert "index the archive" in text and "Index every PDF in /srv/archive." in text
        assert "completed" in text and "indexed 1,204 files" in text  # the run and its outcome
        assert "line 39" in text and "line 19" not in text and "red" in text and "\x1b" not in text  # log tail
        assert "created" in text and "claimed" in text  # events
        # moving the cursor follows with the pane
        await pilot.press("left", "left")
        await until(pilot, lambda: pane.task_id == seeded["review"], what="the pane to follow")
        await pilot.press("escape")
        assert not pane.has_class("-open")


async def test_create_archive_block_unblock_approve_comment(seeded: dict[str, str], board: Board) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        # create
        await pilot.press("n")
        assert isinstance(app.screen, CreateTaskScreen)
        await pilot.press(*"ship it")
        await pilot.press("tab", "7", "tab", *"ops", "enter")
        await until(pilot, lambda: any(t.title == "ship it" for t in board.list_tasks(status="ready")))
        new = next(t for t in board.list_tasks(status="ready") if t.title == "ship it")
        assert (new.priority, new.tenant) == (7, "ops")
        # archive asks first
        await until(pilot, lambda: counts(app)["ready"] == 4)
        await pilot.press("home")
        assert app.selected.id == seeded["ready"]
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert board.get_task(seeded["ready"]).status == TaskStatus.READY
        await pilot.press("x", "y")
        await until(pilot, lambda: board.get_task(seeded["ready"]).status == TaskStatus.ARCHIVED)
        # block with a reason, then unblock
        await until(pilot, lambda: app.selected is not None and app.selected.id != seeded["ready"])
        target = app.selected.id
        await pilot.press("b")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"waiting on review", "enter")
        await until(pilot, lambda: board.get_task(target).status == TaskStatus.BLOCKED)
        assert board.events(0, task_id=target, kinds=["blocked"])[-1].payload["reason"] == "waiting on review"
        await until(pilot, lambda: counts(app)["blocked"] == 2)
        app.column("blocked").focus()
        await pilot.press("home")  # p7 sorts before the other blocked task
        await until(pilot, lambda: app.selected is not None and app.selected.id == target)
        await pilot.press("u")
        await until(pilot, lambda: board.get_task(target).status == TaskStatus.READY)
        # approve the task in review
        app.column("review").focus()
        await until(pilot, lambda: app.selected is not None and app.selected.id == seeded["review"])
        await pilot.press("a")
        await until(pilot, lambda: board.get_task(seeded["review"]).status == TaskStatus.DONE)
        # comment (on it, now in done: same priority as the other done task, and older)
        await until(pilot, lambda: counts(app)["done"] == 2)
        app.column("done").focus()
        await pilot.press("home")
        await until(pilot, lambda: app.selected is not None and app.selected.id == seeded["review"])
        await pilot.press("m", *"nice work", "enter")
        await until(pilot, lambda: [c.body for c in board.detail(seeded["review"]).comments] == ["nice work"])


async def test_errors_are_toasts_not_crashes(seeded: dict[str, str], board: Board) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        app.column("done").focus()
        await pilot.pause()
        await pilot.press("c")  # already done
        await until(pilot, lambda: any(t[2] == "error" for t in app.toasts))
        assert (f"complete {seeded['done']} failed", f"cannot complete task {seeded['done']}: it is already done",
                "error") in app.toasts
        assert app.is_running


async def test_restart_shows_what_was_missed(seeded: dict[str, str], board: Board) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
    cursor = get_subscription(board, "tui-default").cursor
    assert cursor == board.last_event_id()
    board.complete(seeded["ready"], summary="while away")
    board.block(seeded["ready2"], reason="also while away")
    again = RecordingApp()
    async with again.run_test(size=SIZE) as pilot:
        await opened(again, pilot)
        assert ("While you were away (2)", "1 completed, 1 blocked", "information") in again.toasts
        assert any(t[0] == f"✔ completed · {seeded['ready']}" for t in again.toasts)
        await until(pilot, lambda: get_subscription(board, "tui-default").cursor == board.last_event_id())


async def test_board_switcher(seeded: dict[str, str], hermes_home: Path) -> None:
    with Board.open("research", create=True) as other:
        other.create_task("read the paper")
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, BoardSwitcher))
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.ref.slug == "research" and app.board_ready, what="the other board")
        await until(pilot, lambda: counts(app)["ready"] == 1)
        assert app.column("ready").task_at(0).title == "read the paper"
        assert "research" in plain(app.query_one(StatusLine).render())


@pytest.mark.sqlite_only  # a SQLite board has one dispatcher, holding its lease; the fleet's view is tested below
async def test_status_line_shows_the_dispatcher_lease_and_health(seeded: dict[str, str], board: Board) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        status = app.query_one(StatusLine)
        await until(pilot, lambda: status.dispatcher_known and status.health is not None)
        assert "dispatcher: none" in plain(status.render())
        assert status.health.status == "ok"
        board.db.write(lambda: leases.put(board.db, host="buildbox", pid=4242, pid_create_time=None, epoch=3,
                                          now=__import__("time").time()))
        app.poll_status()
        await until(pilot, lambda: status.dispatcher is not None)
        assert "dispatcher: buildbox:4242 epoch 3" in plain(status.render())


@pytest.mark.postgres_only
async def test_status_line_shows_the_fleet_of_a_postgres_board(seeded: dict[str, str], board: Board) -> None:
    from hermes_cli.kanban.store.pg import dispatchers as fleet_sql

    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        status = app.query_one(StatusLine)
        await until(pilot, lambda: status.dispatcher_known)
        assert "dispatcher: none" in plain(status.render())
        for host, pid in (("buildbox", 4242), ("gpubox", 77)):
            board.db.write(lambda h=host, p=pid: fleet_sql.register(board.db, host=h, pid=p, pid_create_time=None,
                                                                   lease_s=30, now=board.db.clock()))
        app.poll_status()
        await until(pilot, lambda: status.dispatcher is not None)
        assert "dispatcher: gpubox:77 +1 more" in plain(status.render(), width=300)



async def test_a_corrupt_board_shows_an_error_screen(hermes_home: Path) -> None:
    db = hermes_home / "kanban" / "boards" / "default" / "kanban.db"
    db.parent.mkdir(parents=True, mode=0o700)
    db.write_bytes(b"this is not a database at all" * 200)
    before = db.read_bytes()
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, BoardErrorScreen), what="the error screen")
        screen = app.screen
        assert screen.error.code == "corrupt"
        assert str(db) in screen.error.message
        await pilot.press("r")  # retry: still corrupt, still the error screen, no crash
        await until(pilot, lambda: isinstance(app.screen, BoardErrorScreen))
        await pilot.press("c")  # actions on a board that is not open explain themselves
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    assert db.read_bytes() == before  # the TUI changed nothing


@pytest.mark.sqlite_only  # damages the SQLite file's pages underneath the app
async def test_damage_found_while_running_shows_the_error_screen(seeded: dict[str, str], board: Board) -> None:
    """The board opens, then its pages are damaged underneath (a later query fails): error screen, no crash."""
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        db_path = board.paths.db
        app.stop_watching()
        await until(pilot, lambda: app._watch_reader is None, what="the watcher to stop")
        board.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        board.close()
        # Damage every page after the schema from another process (this one must never open() a live db file).
        damage = ("import sys; p = sys.argv[1]; f = open(p, 'r+b'); n = f.seek(0, 2) // 4096\n"
                  "for page in range(2, n):\n    f.seek(page * 4096); f.write(bytes.fromhex('deadbeef') * 1024)\n"
                  "f.close()")
        subprocess.run([sys.executable, "-c", damage, str(db_path)], check=True, timeout=60)
        app.action_reload()
        await until(pilot, lambda: isinstance(app.screen, BoardErrorScreen), what="the error screen")
        assert app.screen.error.exit_code == 4
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)


async def test_big_board_loads_pages_on_demand(board: Board) -> None:
    board.db.write(lambda: [board.create_task(f"task {i:04d}", priority=0) for i in range(1_500)])
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        ready = app.column("ready")
        assert ready.count == 1_500
        assert sorted(ready._pages) == [0]  # one page of 100, not 1,500 cards
        await pilot.press("end")
        await until(pilot, lambda: ready.task_at(1_499) is not None, what="the last page")
        assert ready.task_at(1_499).title == "task 1499"
        assert len(ready._pages) <= 3
