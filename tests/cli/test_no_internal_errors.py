"""What the environment can refuse is never an "internal error": every case gets the contract's exit code and one
`error:` line (with --json also a JSON error on stdout where stdout still works), never a traceback.

Run through the real console script: permissions, closed or full stdout and signals during start-up only exist in
a process of their own. The suite runs as root in CI, and root ignores mode bits, so permission denied is produced
by running the command as `nobody` (setpriv) on a home root made 0700; a file where a directory should be is
tried too (it needs no second user).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hermes_cli.kanban import Board

from .conftest import HERMES, Cli, Result

#: the commands issue 9 found printing "internal error: PermissionError"
STORAGE_COMMANDS = [["doctor"], ["backups", "list"], ["repair"], ["restore", "--latest"], ["boards", "list"],
                    ["boards", "create", "fresh"]]


def run(argv: list[str], **kwargs: object) -> Result:
    p = subprocess.run([HERMES, *argv], capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore
    return Result(p.returncode, p.stdout, p.stderr)


def assert_one_error_line(r: Result, code: int, *, json_out: bool = False) -> str:
    assert r.code == code, r
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    line = r.error_line
    assert line.startswith("error: "), r.err
    if json_out:
        err = json.loads(r.out)["error"]
        assert err["message"] == line[len("error: "):], r
    return line


# -- permission denied, and files where directories should be --------------------------------------------------------
@pytest.fixture
def shared_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A HERMES_HOME with a board and a backup, under a directory another user can reach (pytest's tmp_path is
    private to root)."""
    base = Path(tempfile.mkdtemp(prefix="hermes-perm-", dir="/tmp"))
    base.chmod(0o755)
    home = base / "home"
    monkeypatch.setenv("HERMES_HOME", str(home))
    with Board.open() as b:
        b.create_task("x")
    assert run(["kanban", "backup"]).code == 0
    try:
        yield home
    finally:
        shutil.rmtree(base)


def as_someone_else(home: Path) -> list[str]:
    """The argv prefix that runs a command as a user the home is closed to."""
    if os.geteuid() != 0:
        (home / "kanban").chmod(0)
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to be refused here (the file-as-directory test runs)")
    (home / "kanban").chmod(0o700)  # it is already: the home root is private to its owner
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.mark.parametrize("argv", STORAGE_COMMANDS, ids=" ".join)
def test_permission_denied_is_a_storage_error(shared_home: Path, argv: list[str]) -> None:
    prefix = as_someone_else(shared_home)
    for as_json in (False, True):
        full = ["kanban", *argv] + (["--json"] if as_json else [])
        p = subprocess.run([*prefix, HERMES, *full], capture_output=True, text=True, timeout=60)
        r = Result(p.returncode, p.stdout, p.stderr)
        line = assert_one_error_line(r, 4, json_out=as_json)
        assert "Permission denied" in line and str(shared_home) in line, line
        if as_json:
            assert r.json()["error"]["code"] == "storage"
        else:
            assert r.out == ""


@pytest.mark.parametrize("where", ["home", "boards", "board", "backups"])
def test_a_file_where_a_directory_should_be(hermes_home: Path, where: str) -> None:
    with Board.open() as b:
        b.create_task("x")
    assert run(["kanban", "backup"]).code == 0
    target = {"home": hermes_home, "boards": hermes_home / "kanban" / "boards",
              "board": hermes_home / "kanban" / "boards" / "default",
              "backups": hermes_home / "kanban" / "boards" / "default" / "backups"}[where]
    shutil.rmtree(target)
    target.write_text("not a directory\n")
    for argv in STORAGE_COMMANDS:
        r = run(["kanban", *argv, "--json"])
        if r.code == 0:
            # only what does not need the missing directory may succeed (a new board elsewhere, an empty list)
            assert argv in (["boards", "create", "fresh"], ["boards", "list"]) and where in ("board", "backups"), r
            continue
        assert r.code in (1, 4), (argv, r)
        assert_one_error_line(r, r.code, json_out=True)
    assert target.read_text() == "not a directory\n"


# -- stdout that cannot take the output ---------------------------------------------------------------------------
def test_a_full_stdout_is_one_error_line(hermes_home: Path) -> None:
    with Board.open() as b:
        b.create_task("x")
    for argv in (["kanban", "list"], ["kanban", "list", "--json"], ["--version"], ["kanban", "--help"]):
        with open("/dev/full", "w") as full:
            p = subprocess.run([HERMES, *argv], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
        r = Result(p.returncode, "", p.stderr)
        assert r.code == 1, r
        assert r.err == ("error: cannot write to stdout: No space left on device (the output is lost; "
                         "any change the command made is kept)\n"), r.err


def test_a_closed_stdout_is_refused_before_anything_changes(hermes_home: Path) -> None:
    with Board.open() as b:
        b.create_task("x")
    for argv in (["kanban", "list"], ["kanban", "create", "y", "--json"]):
        p = subprocess.run(["/bin/sh", "-c", '"$0" "$@" >&-', HERMES, *argv], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 1, p
        assert p.stderr == "error: stdout is closed (to discard the output, send it to /dev/null)\n", p.stderr
    with Board.open() as b:
        assert [t.title for t in b.list_tasks()] == ["x"]


def test_a_reader_gone_before_the_first_write_is_a_clean_end(hermes_home: Path) -> None:
    """Like `hermes kanban list | head -c1` when head is gone before the first write: exit 0, nothing on stderr
    (the contract of `| head`, docs/notifications.md)."""
    with Board.open() as b:
        b.create_task("x")
    for argv in (["kanban", "list"], ["kanban", "list", "--json"], ["kanban", "--help"]):
        r_fd, w_fd = os.pipe()
        os.close(r_fd)
        p = subprocess.run([HERMES, *argv], stdout=w_fd, stderr=subprocess.PIPE, text=True, timeout=60)
        os.close(w_fd)
        assert (p.returncode, p.stderr) == (0, ""), (argv, p)


# -- signals during start-up ---------------------------------------------------------------------------------------
SITECUSTOMIZE = '''
import os, signal, sys
_target = os.environ.get("HERMES_TEST_SIGNAL_ON_IMPORT")
_sig = getattr(signal, os.environ.get("HERMES_TEST_SIGNAL", "SIGINT"))


class _SignalOnImport:
    """First on sys.meta_path: asked about every module before it is found, by any import mechanism."""

    def find_spec(self, name, path=None, target=None):
        if name == _target:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), _sig)  # delivered while this module is being imported
        return None


if _target:
    sys.meta_path.insert(0, _SignalOnImport())
'''


@pytest.fixture
def signal_on_import(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "site"
    d.mkdir()
    (d / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**os.environ, "PYTHONPATH": str(d)}


def _sigint_as_from_a_terminal() -> None:
    """A command started from a terminal has SIGINT at its default; one started in the background of a script
    without job control (`cmd &`, as a CI runner may start pytest) inherits it ignored, and Python then leaves it
    ignored: Ctrl-C cannot happen there, so this test gives its command a terminal's disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("module", "argv"), [
    ("click", ["kanban", "list"]),
    ("hermes_cli.cli.tasks", ["kanban", "list", "--json"]),
    ("apsw", ["kanban", "create", "x"]),
    ("hermes_cli.cli.health", ["kanban", "doctor", "--json"]),  # a command module loaded on first use
    ("hermes_cli.cli.events", ["kanban", "events", "--follow", "--json"]),
])
def test_ctrl_c_during_start_up(hermes_home: Path, signal_on_import: dict[str, str], module: str,
                                argv: list[str]) -> None:
    env = {**signal_on_import, "HERMES_TEST_SIGNAL_ON_IMPORT": module}
    r = run(argv, env=env, preexec_fn=_sigint_as_from_a_terminal)
    assert (r.code, r.err) == (130, "error: aborted\n"), r
    if "--json" in argv:
        assert r.json() == {"error": {"code": "aborted", "message": "aborted"}}
    else:
        assert r.out == ""
    with Board.open() as b:
        assert b.list_tasks() == []


def test_sigterm_during_start_up_of_a_follower(hermes_home: Path, signal_on_import: dict[str, str]) -> None:
    env = {**signal_on_import, "HERMES_TEST_SIGNAL_ON_IMPORT": "hermes_cli.cli.events",
           "HERMES_TEST_SIGNAL": "SIGTERM"}
    r = run(["kanban", "events", "--follow", "--json"], env=env)
    assert (r.code, r.err) == (143, "error: terminated\n"), r
    assert r.json() == {"error": {"code": "terminated", "message": "terminated"}}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_running_follower_stopped_by_a_signal_ends_cleanly(hermes_home: Path, sig: int) -> None:
    with Board.open() as b:
        b.create_task("x")
    p = subprocess.Popen([HERMES, "kanban", "events", "--follow", "--after", "0", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        first = json.loads(p.stdout.readline())  # running: the handlers are in place
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert (p.returncode, err) == (0, ""), err
    assert first["kind"] == "created" and all(json.loads(line) for line in out.splitlines())


# -- unknown event kinds ---------------------------------------------------------------------------------------------
def test_unknown_event_kinds_are_refused(cli: Cli, board: Board) -> None:
    from hermes_cli.kanban.core import models

    before = board.last_event_id()
    valid = ", ".join(getattr(models, "EVENT_KINDS", ()))  # (getattr: the test must fail on exit codes first)
    for argv in (["events", "--kinds", "completd"], ["events", "--kinds", "completed,bogus"],
                 ["events", "--follow", "--kinds", "bogus", "--timeout", "5"],
                 ["notify-subscribe", "pager", "--kinds", "complete"], ["events", "--kinds", "bad kind"]):
        bad = argv[argv.index("--kinds") + 1].split(",")[-1]
        for as_json in (False, True):
            r = cli(*argv, *(["--json"] if as_json else []))
            assert r.code == 1, r
            assert r.error_line == f"error: invalid event kind {bad!r}: use one of {valid}"
            if as_json:
                assert r.json()["error"]["code"] == "invalid_value"
    assert board.last_event_id() == before and cli("notify-list", "--json").json() == []
    assert cli("events", "--kinds", "completed,gave_up").code == 0


def test_every_kind_the_code_writes_is_a_known_kind() -> None:
    """EVENT_KINDS is what `--kinds` accepts: a kind written anywhere in the code but missing there could never be
    filtered for. Finds every literal kind passed to add_event/_event in hermes_cli."""
    import re

    from hermes_cli.kanban.core.models import EVENT_KINDS, RunOutcome

    root = Path(__file__).resolve().parents[2] / "hermes_cli"
    written: set[str] = set()
    for path in root.rglob("*.py"):
        for m in re.finditer(r"(?:add_event|_event)\(\s*(?:[\w.]+,\s*)?\"([a-z_]+)\"", path.read_text()):
            written.add(m.group(1))
    written |= {str(o) for o in RunOutcome}  # failures record their outcome as the kind
    assert len(written) > 15  # the scan found the calls
    assert written <= set(EVENT_KINDS), written - set(EVENT_KINDS)
