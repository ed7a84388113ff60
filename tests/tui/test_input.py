"""Keys that arrive together (one read from the terminal: `Right Right Right`, `lll`, a Tab and then text) all take
effect, in order, on the widget that has the focus by then.

Pilot's `press` waits for the app to go idle after every key, which hides the problem: a fast typist, a key held
down or a paste delivers several keys in one read, and the terminal driver then posts them all before the app has
handled the first. `burst` does what the driver does with such a read. tests/tui/test_terminal.py checks the same
through a real terminal (tmux)."""

from __future__ import annotations

from textual import events
from textual.widgets import Input

from hermes_cli.kanban import Board, TaskStatus
from hermes_cli.kanban.views.snapshot import Filter
from tui.screens.dialogs import CreateTaskScreen
from tui.widgets.column import TaskColumn

from .conftest import SIZE, RecordingApp, opened, until


def burst(app: RecordingApp, *keys: str) -> None:
    """Post `keys` to the app in one go, as the terminal driver posts every key it parsed from one read."""
    for key in keys:
        char = key if len(key) == 1 else None
        app.post_message(events.Key(key, char))


async def settled(pilot: object, app: RecordingApp, check: object, what: str) -> None:
    """Wait (bounded) until `check()` holds; on failure say where the focus ended up."""
    try:
        await until(pilot, check, what=what)  # type: ignore[arg-type]
    except AssertionError as err:
        raise AssertionError(f"{err}; focused: {app.focused!r}") from None


async def test_three_rights_in_one_read_move_three_columns(seeded: dict[str, str]) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        assert app.focused is app.column("ready")
        burst(app, "right", "right", "right")
        await settled(pilot, app, lambda: app.focused is app.column("blocked"), "right x3: ready -> blocked")
        burst(app, "left", "left", "left")
        await settled(pilot, app, lambda: app.focused is app.column("ready"), "left x3: blocked -> ready")


async def test_lll_and_hhh_in_one_read(seeded: dict[str, str]) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        burst(app, "l", "l", "l")
        await settled(pilot, app, lambda: app.focused is app.column("blocked"), "lll: ready -> blocked")
        await settled(pilot, app, lambda: app.selected is not None and app.selected.id == seeded["blocked"],
                      "the blocked card selected")
        burst(app, "h", "h", "h", "h")
        await settled(pilot, app, lambda: app.focused is app.column("todo"), "hhhh: blocked -> todo")


async def test_keys_after_a_column_move_act_on_the_new_column(seeded: dict[str, str]) -> None:
    """`left right down down` in one read: back in the ready column, two cards down (the third ready task)."""
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        burst(app, "left", "right", "down", "down")
        await settled(pilot, app, lambda: app.selected is not None and app.selected.id == seeded["ready3"]
                      and app.focused is app.column("ready"), "the third ready card")
        assert app.column("todo").cursor == 0


async def test_typing_right_after_tab_lands_in_the_next_field(seeded: dict[str, str]) -> None:
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, CreateTaskScreen) and app.focused is not None)
        screen = app.screen
        burst(app, *"ship", "tab", "7", "tab", *"ops", "tab", *"the body", "shift+tab", "s")

        def values() -> tuple[str, ...]:
            return tuple(screen.query_one(f"#{n}", Input).value for n in ("title", "priority", "tenant", "body"))

        try:
            # shift+tab back into the tenant selects its text (as a click or slow typing would), so `s` replaces it
            await until(pilot, lambda: values() == ("ship", "7", "s", "the body"), timeout=20)
        except AssertionError:
            raise AssertionError(f"fields: {values()}; focused: {app.focused!r}") from None


async def test_editing_keys_before_a_tab_stay_in_their_field(seeded: dict[str, str]) -> None:
    """`abc backspace tab 7 5 backspace` in one read: the first backspace edits the title, the second the priority."""
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, CreateTaskScreen) and app.focused is not None)
        screen = app.screen
        burst(app, *"abc", "backspace", "tab", *"75", "backspace")

        def values() -> tuple[str, ...]:
            return tuple(screen.query_one(f"#{n}", Input).value for n in ("title", "priority"))

        try:
            await until(pilot, lambda: values() == ("ab", "7"), timeout=20)
        except AssertionError:
            raise AssertionError(f"fields: {values()}; focused: {app.focused!r}") from None


async def test_typing_right_after_slash_goes_to_the_filter(seeded: dict[str, str]) -> None:
    """`/deploy` typed fast: every letter lands in the filter box (none of them runs a board key such as `l`),
    and enter right after it applies the filter and hands the keys that follow back to the columns."""
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        flt = app.query_one("#filter", Input)
        burst(app, "slash", *"deploy")
        await settled(pilot, app, lambda: flt.value == "deploy", "the filter text")
        assert app.focused is flt
        # the typed filter applies after a pause; then only the ready column has a task, which enter focuses
        await settled(pilot, app, lambda: app.column("todo").count == 0 and app.column("ready").count == 1,
                      "the filter to apply")
        burst(app, "enter", "l")
        await settled(pilot, app, lambda: app.focused is app.column("running"),
                      "enter applies the filter, l moves to the next column")
        assert flt.value == "deploy" and app.flt == Filter(search="deploy")
        # escape clears the filter and goes back to the ready column; the l after it moves on from there
        burst(app, "slash", "escape", "l")
        await settled(pilot, app, lambda: app.focused is app.column("running") and not app.flt.active,
                      "escape leaves the filter box, l moves on")
        assert flt.value == ""


async def test_a_filter_typed_and_entered_in_one_read_applies_as_typed(seeded: dict[str, str]) -> None:
    """`/deploy` and enter in one read: the filter applied is the whole text (the enter is read before the box
    has taken the letters), and the keys after the enter go back to the board."""
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        burst(app, "slash", *"deployx", "backspace", "enter")
        await settled(pilot, app, lambda: app.flt == Filter(search="deploy") and isinstance(app.focused, TaskColumn),
                      "the filter applied and a column focused")
        await settled(pilot, app, lambda: app.column("ready").count == 1 and app.column("todo").count == 0,
                      "the filtered counts")
        assert app.query_one("#filter", Input).value == "deploy"
        burst(app, "slash", *"xyz", "escape", "l")
        await settled(pilot, app, lambda: app.focused is app.column("running") and not app.flt.active,
                      "escape clears the filter typed just before it")
        assert app.query_one("#filter", Input).value == ""
        for _ in range(3):  # a Changed event of the cleared text must not bring it back after the debounce
            await pilot.pause(0.2)
        assert not app.flt.active and app.query_one("#filter", Input).value == ""


async def test_an_action_right_after_a_move_acts_on_the_card_moved_to(seeded: dict[str, str], board: Board) -> None:
    """`down c` in one read completes the second ready card (the one the cursor moved to), not the first."""
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        await settled(pilot, app, lambda: app.selected is not None and app.selected.id == seeded["ready"],
                      "the first ready card selected")
        burst(app, "down", "c")
        await settled(pilot, app, lambda: board.get_task(seeded["ready2"]).status == TaskStatus.DONE,
                      "the second ready task to be completed")
        assert board.get_task(seeded["ready"]).status == TaskStatus.READY
