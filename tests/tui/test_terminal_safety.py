"""The TUI never hands task text to the terminal as a control sequence, and never reads Textual markup in it.

What is checked is what Textual would write: the segments of every line the compositor renders for the screen
(cards, the detail pane with its log tail, a confirmation dialog, toasts).
"""

from __future__ import annotations

from typing import Any

from hermes_cli.kanban import Board

from .conftest import SIZE, RecordingApp, opened, until

#: a title with every kind of sequence (raw ESC and C0 too: a board written by another tool can hold them)
TITLE = "T\x1b]52;c;aGk=\x07 \x9b2J \x9d0;x\x9c \x1bP1$r\x1b\\ \x7f\u202e [bold]B[/bold] [link=http://e.x]L[/link]"
BODY = "body \x1b]8;;http://e.x/\x1b\\here\x1b]8;;\x1b\\ \x1b[2J\r\x08 end [red]R[/red]"
LOG = "log \x1b]52;c;aGk=\x07 \x9b31m \x1b[32mgreen\x1b[0m \x1b\n"


def screen_text(app: Any) -> str:
    """Every character of the current screen as the compositor renders it (toasts included)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


def unsafe(text: str) -> list[str]:
    return sorted({repr(c) for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F
                   or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"})


def links(app: Any) -> list[str]:
    strips = app.screen._compositor.render_strips()
    return [seg.style.link for strip in strips for seg in strip if seg.style is not None and seg.style.link]


async def test_hostile_task_text_renders_inert_and_literal(board: Board) -> None:
    t = board.create_task("placeholder", body=BODY, tenant="te\x9bn")[0]
    board.db.execute("UPDATE tasks SET title = ? WHERE id = ?", (TITLE, t.id))
    board.comment(t.id, "comment \x1b]52;c;aGk=\x07 [b]C[/b]")
    logs = board.paths.logs_dir
    logs.mkdir(exist_ok=True)
    (logs / f"{t.id}.log").write_text(LOG)
    app = RecordingApp()
    async with app.run_test(size=SIZE) as pilot:
        await opened(app, pilot)
        await until(pilot, lambda: app.selected is not None and app.selected.id == t.id, what="the card")
        assert unsafe(screen_text(app)) == [], screen_text(app)  # the card
        await pilot.press("enter")
        await until(pilot, lambda: "green" in screen_text(app), what="the detail pane with the log tail")
        text = screen_text(app)
        assert unsafe(text) == [], text
        assert "[bold]B[/bold] [link=http://e.x]L[/link]" in text  # markup shown as typed, not applied
        assert "[red]R[/red]" in text and "[b]C[/b]" in text
        assert "\\x1b]52;c;aGk=\\x07" in text  # the sequence is visible as an escape, not silently dropped
        assert links(app) == []
        await pilot.press("x")  # the archive dialog quotes the title
        await until(pilot, lambda: "Archive (y)" in screen_text(app), what="the confirmation")
        text = screen_text(app)
        assert unsafe(text) == [] and "[bold]B[/bold]" in text, text
        await pilot.press("y")  # archived: a toast repeats the title
        await until(pilot, lambda: any("[bold]B[/bold]" in m for _, m, _ in app.toasts), what="the toast")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert unsafe(text) == [] and links(app) == [], text
