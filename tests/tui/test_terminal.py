"""The TUI in a real terminal (tmux): keys sent in one `send-keys` reach the app in one read, as from a fast typist
or a paste, and every one of them takes effect. Pilot tests of the same are in test_input.py; this one also covers
the terminal driver's parsing of a multi-key read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hermes_cli.kanban import Board

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (the Pilot tests in "
                                "test_input.py cover the same keys without a terminal)")

HERMES = str(Path(sys.executable).with_name("hermes"))


class Tmux:
    """One TUI in a detached tmux session on a private server socket (never the user's tmux)."""

    def __init__(self, home: Path) -> None:
        self.socket = f"hermes-test-{uuid.uuid4().hex[:12]}"
        self.home = home

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=30).stdout

    def start(self) -> None:
        # COLUMNS/LINES would override the terminal's own size (shutil.get_terminal_size reads them first), and a
        # pytest-xdist worker sets them to 80x24: the app must size itself to tmux's 120x40 window
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env |= {"HERMES_HOME": str(self.home), "TERM": "xterm-256color"}
        subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d", "-s", "tui", "-x", "120",
                        "-y", "40", f"{HERMES} kanban tui"], check=True, env=env, timeout=30)

    def keys(self, *keys: str) -> None:
        """All `keys` in one send-keys: tmux writes them to the terminal together."""
        self.run("send-keys", "-t", "tui", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "tui")

    def wait_for(self, check: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{text}")
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def tmux(hermes_home: Path) -> Iterator[Tmux]:
    t = Tmux(hermes_home)
    try:
        yield t
    finally:
        t.stop()


def test_keys_in_one_read_all_take_effect_in_a_real_terminal(tmux: Tmux, seeded: dict[str, str],
                                                             board: Board) -> None:
    tmux.start()
    tmux.wait_for(lambda s: seeded["ready2"] in s and seeded["done"] in s, "the board")
    for keys, status in ((("Right", "Right", "Right"), "blocked"), (("h", "h", "h"), "ready"),
                         (("l", "l", "l", "l"), "done")):
        tmux.keys(*keys)
        time.sleep(0.5)  # let the app handle the burst before the enter that shows where the focus is
        tmux.keys("Enter")
        tmux.wait_for(lambda s, st=status: f"{seeded[st]} · {st}" in s,
                      f"the detail pane of the {status} card after {' '.join(keys)}", timeout=10)
        tmux.keys("Escape")
        tmux.wait_for(lambda s, st=status: f"{seeded[st]} · {st}" not in s, "the detail pane to close")
    # the new-task form: the text typed right after each tab lands in the next field
    tmux.keys("n")
    tmux.wait_for(lambda s: "New task" in s, "the new-task form")
    tmux.keys("-l", "ship it\t7\tops")
    tmux.keys("Enter")
    deadline = time.monotonic() + 30
    while not [t for t in board.list_tasks() if t.title.startswith("ship")]:
        assert time.monotonic() < deadline, f"no task created; the screen:\n{tmux.screen()}"
        time.sleep(0.1)
    [new] = [t for t in board.list_tasks() if t.title.startswith("ship")]
    assert (new.title, new.priority, new.tenant) == ("ship it", 7, "ops")
