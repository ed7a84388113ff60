"""Text a user or worker wrote, made safe to show on a terminal.

Titles, bodies, summaries, reasons, comments, log lines and event payloads can hold anything: `ESC ] 52 ; c ; ...
BEL` writes the reader's clipboard, `ESC ] 8` plants a hyperlink, a CSI (7-bit `ESC [` or 8-bit 0x9b) moves the
cursor or clears the screen, a DCS/SOS/PM/APC string talks to the terminal itself, a carriage return overwrites
the line, and a bidi override shows text in another order than it is stored. A terminal acts on a sequence only
through its introducer (ESC or a C1 control), so replacing every control character with a visible escape
(`\\x1b`, `\\x9b`, `\\u202e`) neutralises every sequence while still showing that something was there. The rest of
the sequence stays as plain, inert text.

`--json` output does not go through here: JSON escaping keeps it exact and inert.
No click or textual imports: the CLI renderers and the TUI widgets both use it.
"""

from __future__ import annotations

import functools
import re

#: C0 controls except tab and newline, DEL, C1 controls (0x80-0x9f), the bidi embeddings/overrides/isolates, the
#: Unicode line and paragraph separators, and lone surrogates (undecodable bytes carried by surrogateescape)
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff"
_PATTERNS = {
    "unsafe": f"[{_UNSAFE}]",
    "inline": f"[{_UNSAFE}\t\n]",
    #: a complete CSI sequence (7- or 8-bit): colours and cursor moves, common in worker logs
    "csi": r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]",
}


@functools.cache
def _compiled(name: str) -> re.Pattern[str]:
    """Compiled on first use, once: compiling all three at import cost about 2 ms of every command's start-up (the
    wide character classes), and a hot worker command uses one of them or none (issue 11)."""
    return re.compile(_PATTERNS[name])


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def terminal_safe(text: object) -> str:
    """`text` with every control character except newline and tab shown as a visible escape (`\\x1b`)."""
    return _compiled("unsafe").sub(_escape, "" if text is None else str(text))


def inline(text: object) -> str:
    """Like `terminal_safe`, and newlines and tabs escaped too: for a field that must stay on its line."""
    return _compiled("inline").sub(_escape, "" if text is None else str(text))


def strip_csi(text: str) -> str:
    """`text` without complete CSI sequences (a log's colours would otherwise show as `\\x1b[31m` noise). Apply
    `terminal_safe` or `inline` afterwards: everything else (OSC, DCS, lone ESC, C1) is still there."""
    return _compiled("csi").sub("", text)
