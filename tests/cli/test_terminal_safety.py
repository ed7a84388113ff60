"""Text that users and workers wrote never reaches the reader's terminal as a control sequence.

A task body with `ESC ] 52 ; c ; ... BEL` would write the reader's clipboard, `ESC ] 8` plants a hyperlink, a C1
CSI (0x9b) recolours or clears the screen, a DCS can talk back to the terminal. Human output shows every one of them
as a visible escape; `--json` keeps the exact text (JSON escaping already makes it inert).
"""

from __future__ import annotations

import json

import pytest

from hermes_cli.kanban import Board

from .conftest import Cli

#: every kind of sequence a terminal acts on, each with a marker word to find it by
SEQUENCES = {
    "osc52": "\x1b]52;c;aGVsbG8=\x07",  # clipboard write, BEL-terminated
    "osc8": "\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\",  # hyperlink, ST-terminated
    "csi": "\x1b[2J\x1b[31m",  # clear screen, red
    "c1csi": "\x9b31m",  # 8-bit CSI
    "c1osc": "\x9d0;pwned\x9c",  # 8-bit OSC (window title) with 8-bit ST
    "dcs": "\x1bP1$r\x1b\\\x90q\x9c",  # DCS, 7- and 8-bit
    "sos_pm_apc": "\x1bXsos\x1b\\\x1b^pm\x1b\\\x1b_apc\x1b\\\x98\x9e\x9f",
    "lone": "\x1b",  # a lone ESC
    "c0": "\r\x08\x07\x00\x0b\x0c\x7f",  # carriage return (overwrites the line), backspace, bell, NUL, VT, FF, DEL
    "bidi": "\u202etxt.exe",  # right-to-left override: shows a different file name than it is
}
HOSTILE = " ".join(f"<{name}>{seq}" for name, seq in SEQUENCES.items())
#: what a title may hold through the API (C0 controls are refused there, C1 and DEL are not)
HOSTILE_TITLE = "title \x9b2J\x9d52;c;aGk=\x9c \x7f\u202e [bold]b[/bold] [link=http://evil.example]x[/link]"


def unsafe(text: str) -> list[str]:
    """Characters a terminal could act on (newline and tab excepted: the layout uses them)."""
    return sorted({repr(c) for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F
                   or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"})


@pytest.fixture
def hostile(board: Board, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A task whose every free-text field is hostile; its title holds raw ESC too, as a board written by another
    tool (or an older hermes) could. PostgreSQL text cannot hold NUL at all (refused as bad input): there the
    sequences are every other one."""
    if board.db.engine == "postgres":
        monkeypatch.setitem(globals(), "HOSTILE", HOSTILE.replace("\x00", ""))
    t = board.create_task(HOSTILE_TITLE, body=f"first line\n{HOSTILE}\nlast line", tenant="ten\x9bant")[0]
    board.comment(t.id, f"comment {HOSTILE}", author="au\x9dthor")
    claim = board.claim(t.id, worker="wor\x9bker")
    assert claim is not None
    board.complete(t.id, claim.run_id, summary=f"summary {HOSTILE}")
    blocked = board.create_task("blocked one")[0]
    board.block(blocked.id, reason=f"reason {HOSTILE}")
    raw = board.create_task("raw title")[0]
    board.db.execute("UPDATE tasks SET title = ? WHERE id = ?", (f"raw {HOSTILE}", raw.id))
    return {"task": t.id, "blocked": blocked.id, "raw": raw.id}


def test_textsafe_neutralises_every_sequence() -> None:
    from hermes_cli.kanban.core.textsafe import inline, terminal_safe

    for name, seq in SEQUENCES.items():
        out = terminal_safe(f"<{name}>{seq}")
        assert unsafe(out) == [], (name, out)
        assert out.startswith(f"<{name}>") and len(out) > len(f"<{name}>"), (name, out)  # visible, not dropped
    assert terminal_safe("a\tb\nc") == "a\tb\nc"
    assert inline("a\tb\nc") == "a\\tb\\nc"
    assert terminal_safe("\x1b]52;c;aGk=\x07") == "\\x1b]52;c;aGk=\\x07"
    assert terminal_safe("\x9b31m") == "\\x9b31m"
    plain = "plain ASCII, accents é, CJK 漢字, emoji 👩‍💻, [bold]markup[/bold], back\\slash"
    assert terminal_safe(plain) == plain == inline(plain)


@pytest.mark.parametrize("argv", [
    ["list"], ["list", "--all"], ["show", "{task}"], ["show", "{blocked}"], ["show", "{raw}"], ["events"],
    ["events", "--follow", "--after", "0", "--limit", "50", "--timeout", "5"], ["list", "--search", "raw"],
], ids=lambda a: " ".join(a))
def test_human_output_has_no_control_sequences(cli: Cli, hostile: dict[str, str], argv: list[str]) -> None:
    r = cli(*[a.format(**hostile) for a in argv])
    assert r.code == 0, r
    assert unsafe(r.out) == [] and unsafe(r.err) == [], r.out


def test_human_output_shows_the_sequences_as_visible_escapes(cli: Cli, hostile: dict[str, str]) -> None:
    out = cli("show", hostile["task"]).out
    assert "<osc52>\\x1b]52;c;aGVsbG8=\\x07" in out  # body
    assert "summary: summary <osc52>\\x1b]52;c;" in out
    assert "comment <osc52>\\x1b]52;c;" in out and "au\\x9dthor" in out
    assert "title \\x9b2J\\x9d52;c;aGk=\\x9c \\x7f\\u202e [bold]b[/bold]" in out
    assert "tenant ten\\x9bant" in out
    assert "\nfirst line\n" in cli("show", hostile["task"]).out.replace("  first line", "\nfirst line")
    assert "raw <osc52>\\x1b]52;c;" in cli("list").out
    assert "reason=reason <osc52>\\x1b]52;c;" in cli("events").out


def test_json_output_keeps_the_exact_text(cli: Cli, hostile: dict[str, str]) -> None:
    d = cli("show", hostile["task"], "--json").json()
    assert d["title"] == HOSTILE_TITLE and d["body"] == f"first line\n{HOSTILE}\nlast line"
    assert d["summary"] == f"summary {HOSTILE}" and d["comments"][0]["body"] == f"comment {HOSTILE}"
    assert d["tenant"] == "ten\x9bant" and d["comments"][0]["author"] == "au\x9dthor"
    titles = {t["id"]: t["title"] for t in cli("list", "--all", "--json").json()}
    assert titles[hostile["raw"]] == f"raw {HOSTILE}"
    events = cli("events", "--json").json()
    assert any(e["payload"].get("reason") == f"reason {HOSTILE}" for e in events)
    follow = cli("events", "--follow", "--after", "0", "--limit", "50", "--timeout", "5", "--json")
    streamed = [json.loads(line) for line in follow.out.splitlines()]
    assert any(e["payload"].get("summary") == f"summary {HOSTILE}" for e in streamed)
    for out in (cli("show", hostile["task"], "--json").out, cli("events", "--json").out, follow.out):
        assert unsafe(out) == []  # JSON escaping: the bytes on stdout are inert too


def test_error_lines_quoting_user_input_are_neutralised(cli: Cli, hostile: dict[str, str]) -> None:
    """(Already true before terminal-safe output: error lines go through common.one_line; kept as a guard.)"""
    for argv in (["show", "t_\x1b]52;c;aGk=\x07"], ["list", "--status", "\x9b2J"],
                 ["events", "--subscription", "\x1b]8;;x\x1b\\"]):
        r = cli(*argv)
        assert r.code in (1, 2), r
        assert r.error_line.startswith("error: ") and unsafe(r.err) == [], r.err
