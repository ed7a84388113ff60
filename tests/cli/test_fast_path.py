"""The console script's click-free fast path (hermes_cli/fast.py) prints exactly what the click CLI prints.

One sequence of commands runs twice, in two fresh boards: every step through the console script's entry point
(`hermes_cli.fast.main`) on one board, and through the click CLI (`hermes_cli.main.main`) on the other. After
replacing each board's task ids by T1, T2, ... (in order of appearance) and timestamps by a marker, exit code, stdout
and stderr must be the same, byte for byte, for every step: successes, domain errors, usage errors, `--json` error
objects. Each step also says which way it must go: the fast path (click never imported) or the click CLI (a shape
the fast path hands over), so the comparison is never between two runs of the same code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

FAST = r"""
import atexit, sys
marker = sys.argv[1]
atexit.register(lambda: open(marker, "w").write("click" if "click" in sys.modules else "fast"))
sys.argv = ["hermes", *sys.argv[2:]]
from hermes_cli.fast import main
main()
"""
CLICK = [sys.executable, "-m", "hermes_cli.main"]
TASK_ID = re.compile(r"\bt_[0-9a-f]{12}\b")
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
AGO = re.compile(r"\(\d+[smhd] ago\)")


@dataclass
class Home:
    path: Path
    ids: dict[str, str] = field(default_factory=dict)  #: real id -> T<n>
    runs: list[int] = field(default_factory=list)

    def name(self, n: int) -> str:
        return next(real for real, alias in self.ids.items() if alias == f"T{n}")

    def fill(self, word: str) -> str:
        word = re.sub(r"@T(\d+)@", lambda m: self.name(int(m.group(1))), word)
        return re.sub(r"@R(\d+)@", lambda m: str(self.runs[int(m.group(1)) - 1]), word)

    def normalise(self, text: str) -> str:
        for real in TASK_ID.findall(text):
            self.ids.setdefault(real, f"T{len(self.ids) + 1}")
        text = TASK_ID.sub(lambda m: self.ids[m.group(0)], text).replace(str(self.path), "<home>")
        text = re.sub(r"quarantine/[0-9a-f]{16}", "quarantine/<hash>", text)
        return AGO.sub("(<age> ago)", ISO.sub("<time>", text))


def _run(home: Home, fast: bool, argv: list[str], env: dict[str, str], tmp: Path) -> tuple[int, str, str, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
    full_env.update(HERMES_HOME=str(home.path), **{k: home.fill(v) for k, v in env.items()})
    words = [home.fill(w) for w in argv]
    marker = tmp / "marker"
    marker.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", FAST, str(marker), *words] if fast else [*CLICK, *words]
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120)
    way = marker.read_text() if fast else "click"
    out, err = home.normalise(p.stdout), home.normalise(p.stderr)
    if '"run_id": ' in p.stdout and p.returncode == 0 and p.stdout.startswith("{"):
        run = json.loads(p.stdout).get("run_id")
        if isinstance(run, int) and run not in home.runs:
            home.runs.append(run)
    return p.returncode, out, err, way


#: (argv after `hermes`, extra environment, which way the fast entry point must go: "fast" or "click")
WORKER = {"HERMES_KANBAN_TASK": "@T2@", "HERMES_KANBAN_RUN_ID": "@R1@"}
STEPS: list[tuple[list[str], dict[str, str], str]] = [
    (["kanban", "create", "first"], {}, "click"),  # no board yet: the click CLI creates it (once)
    # a worker creating follow-up work: its profile is in the environment (the click CLI may record it)
    (["kanban", "create", "second task", "--priority", "5", "--tenant", "acme", "--json"],
     {"HERMES_PROFILE": "agent-7"}, "fast"),
    (["kanban", "create", "child", "--parent", "@T1@", "--json"], {}, "fast"),
    (["kanban", "create", "dup", "--idempotency-key", "k1", "--json"], {}, "fast"),
    (["kanban", "create", "dup", "--idempotency-key=k1", "--json"], {}, "fast"),
    (["kanban", "create", "all options", "--body", "b", "--command", "echo {task_id}", "--max-runtime", "90s",
      "--max-retries", "2", "--review"], {}, "fast"),
    (["kanban", "create", "bad", "--priority", "5000"], {}, "click"),
    (["kanban", "create", "bad", "--priority", "5000", "--json"], {}, "click"),
    (["kanban", "create", "-x"], {}, "click"),
    (["kanban", "create", "from a file", "--body-file", "/dev/null"], {}, "click"),
    (["kanban", "create", "twice", "--tenant", "a", "--tenant", "b"], {}, "click"),
    (["kanban", "create", "x", "--help"], {}, "click"),
    (["kanban", "show", "@T1@", "--json"], {}, "fast"),
    (["kanban", "show", "@T1@", "--json", "--events", "3"], {}, "fast"),
    (["kanban", "show", "@T1@"], {}, "click"),
    (["kanban", "show", "t_000000000000", "--json"], {}, "click"),
    (["kanban", "claim", "@T2@", "--json"], {}, "fast"),
    (["kanban", "claim", "@T2@"], {}, "click"),
    (["kanban", "heartbeat", "@T2@", "--run-id", "@R1@", "--json"], {}, "fast"),
    (["kanban", "heartbeat", "@T2@"], {}, "click"),
    (["kanban", "heartbeat", "--ttl", "5m"], WORKER, "fast"),
    (["kanban", "heartbeat", "@T2@", "--run-id", "0"], {}, "click"),
    (["kanban", "heartbeat", "@T2@", "--run-id", "abc"], {}, "click"),
    (["kanban", "complete", "@T2@", "--run-id", "999"], {}, "click"),
    (["kanban", "complete", "@T2@", "--run-id", "999", "--json"], {}, "click"),
    (["kanban", "complete", "--summary", "done it", "--json"], WORKER, "fast"),
    (["kanban", "complete"], WORKER, "fast"),
    (["kanban", "complete", "@T1@"], {}, "fast"),
    (["kanban", "claim", "--json"], {}, "fast"),
    (["kanban", "block", "needs an API key"], {"HERMES_KANBAN_TASK": "@T3@", "HERMES_KANBAN_RUN_ID": "@R2@"}, "fast"),
    (["kanban", "block", "@T4@", "reason here", "--json"], {}, "fast"),
    (["kanban", "block", "@T6@", "a", "--reason", "b"], {}, "click"),
    (["kanban", "block", "@T6@", "--reason", "b"], {}, "fast"),
    (["kanban", "--board", "default", "complete", "@T6@", "--json"], {}, "fast"),
    (["kanban", "complete", "@T6@", "--board", "nosuch"], {}, "click"),
    (["kanban", "complete", "t_000000000000", "--json"], {}, "click"),
    (["kanban", "claim", "--json", "--worker", "w", "--ttl", "1m"], {}, "fast"),
    (["kanban", "claim", "@T2@", "--json"], {}, "click"),
    (["kanban", "list", "--json"], {}, "click"),
    (["--help"], {}, "click"),
    # the shapes hermes-agent users type most (issue 11): assignees, reports with a result, notes, worded reasons
    (["kanban", "create", "research the market", "--assignee", "researcher", "--body", "find 3 sources",
      "--priority", "3", "--parent", "@T1@", "--json"], {}, "fast"),
    (["kanban", "create", "triaged", "--assignee", "writer", "--created-by", "ana", "--skill", "web", "--skill", "pdf",
      "--triage"], {}, "fast"),
    (["kanban", "create", "held", "--initial-status", "blocked", "--json"], {"HERMES_PROFILE": "lead"}, "fast"),
    (["kanban", "create", "bad", "--initial-status", "bogus"], {}, "click"),
    (["kanban", "create", "bad", "--assignee", "has space"], {}, "click"),
    (["kanban", "claim", "@T9@", "--json"], {}, "fast"),
    (["kanban", "heartbeat", "--note", "halfway", "--json"],
     {"HERMES_KANBAN_TASK": "@T9@", "HERMES_KANBAN_RUN_ID": "@R4@"}, "fast"),
    (["kanban", "heartbeat", "--note", "three quarters"],
     {"HERMES_KANBAN_TASK": "@T9@", "HERMES_KANBAN_RUN_ID": "@R4@"}, "fast"),
    (["kanban", "complete", "--summary", "found 3", "--result", "a, b, c", "--metadata", '{"sources": 3}', "--json"],
     {"HERMES_KANBAN_TASK": "@T9@", "HERMES_KANBAN_RUN_ID": "@R4@"}, "fast"),
    (["kanban", "show", "@T9@", "--json"], {}, "fast"),
    (["kanban", "show", "@T9@"], {}, "click"),
    (["kanban", "create", "ops"], {}, "fast"),
    (["kanban", "block", "@T12@", "waiting", "for", "the", "data", "--kind", "dependency", "--json"], {}, "fast"),
    (["kanban", "block", "@T12@", "x", "--kind", "bogus"], {}, "click"),
    (["kanban", "block", "@T7@", "x", "--ids", "@T12@"], {}, "click"),
    (["kanban", "complete", "@T7@", "--metadata", "[1]"], {}, "click"),
    (["kanban", "complete", "@T7@", "--result", "by hand", "--json"], {}, "fast"),
    (["kanban", "complete", "@T11@", "@T10@", "--result", "r"], {}, "click"),
    (["kanban", "complete", "@T9@", "--run-id", "@R4@", "--next"], {}, "click"),
    (["kanban", "create", "tenant job", "--tenant", "acme"], {}, "fast"),
    (["kanban", "claim", "--tenant", "acme", "--json"], {}, "fast"),
    (["kanban", "complete", "@T13@", "--run-id", "@R5@", "--json"], {}, "fast"),
    (["kanban", "create", "forced"], {}, "fast"),
    (["kanban", "claim", "@T14@", "--json"], {}, "fast"),
    (["kanban", "block", "@T14@", "--force", "--run-id", "@R6@"], {}, "fast"),
    (["kanban", "create", "forced too"], {}, "fast"),
    (["kanban", "claim", "@T15@", "--json"], {}, "fast"),
    (["kanban", "complete", "@T15@", "--force", "--summary", "an operator closed it"], {}, "fast"),
    (["kanban", "create", "in a worktree", "--workspace", "worktree", "--branch", "wt/x", "--json"], {}, "fast"),
    (["kanban", "create", "branch alone", "--branch", "wt/x"], {}, "click"),
    (["kanban", "create", "later", "--scheduled-at", "2999-06-01T03:00:00Z", "--json"], {}, "fast"),
    (["kanban", "create", "bad time", "--scheduled-at", "soon"], {}, "click"),
]


def test_the_fast_path_prints_what_the_click_cli_prints(tmp_path: Path) -> None:
    a, b = Home(tmp_path / "fast-home"), Home(tmp_path / "click-home")
    problems: list[str] = []
    for argv, env, way in STEPS:
        rc_a, out_a, err_a, went = _run(a, True, argv, env, tmp_path)
        rc_b, out_b, err_b, _ = _run(b, False, argv, env, tmp_path)
        shown = " ".join(argv)
        if went != way:
            problems.append(f"{shown}: went the {went} way, expected {way}")
        if (rc_a, out_a, err_a) != (rc_b, out_b, err_b):
            problems.append(f"{shown}:\n  fast  {rc_a} {out_a!r} {err_a!r}\n  click {rc_b} {out_b!r} {err_b!r}")
    assert not problems, "\n".join(problems)
    # the sequence covered successes and failures of every fast verb
    assert {argv[1] for argv, _, way in STEPS if way == "fast"} >= {"create", "show", "claim", "heartbeat",
                                                                      "complete", "block"}
    # and every option the fast path parses (so none is parsed there without being compared here)
    from hermes_cli.fast import _table

    for verb, (_, options) in _table().items():
        used = {w.partition("=")[0] for argv, _, way in STEPS if way == "fast" and argv[1] == verb for w in argv}
        assert set(options) - {"--board"} <= used, f"{verb}: {sorted(set(options) - used - {'--board'})} never tried"


def _files(home: Home) -> list[str]:
    return sorted(home.normalise(str(p.relative_to(home.path))) for p in home.path.rglob("*") if p.is_file())


def test_with_no_board_or_a_broken_one_the_fast_path_does_what_the_click_cli_does(tmp_path: Path) -> None:
    """A worker's report never creates a board: with none there, the fast path leaves no trace and the click CLI
    answers. A report the board cannot take is spooled by the click CLI's own spooler, without a second try."""
    a, b = Home(tmp_path / "fast-home"), Home(tmp_path / "click-home")
    steps: list[tuple[list[str], str]] = [
        (["kanban", "complete", "t_000000000000", "--run-id", "1"], "click"),
        (["kanban", "heartbeat", "t_000000000000", "--run-id", "1", "--json"], "click"),
        (["kanban", "block", "t_000000000000", "gone", "--run-id", "1"], "click"),
        (["kanban", "show", "t_000000000000", "--json"], "click"),
        (["kanban", "create", "x"], "fast"),  # T1 is t_000000000000, named first above (show made the board)
        (["kanban", "claim", "@T2@", "--json"], "fast"),
        (["kanban", "create", "y"], "fast"),
        (["kanban", "claim", "@T3@", "--json"], "fast"),
        ("smash", ""),
        # spooled by the function the click command calls (cli/hot.py), so without click
        (["kanban", "complete", "@T2@", "--run-id", "@R1@", "--summary", "done", "--json"], "fast"),
        (["kanban", "block", "@T3@", "needs a key", "--run-id", "@R2@"], "fast"),
    ]
    problems: list[str] = []
    for argv, way in steps:
        if argv == "smash":  # the same bytes over both boards' headers, with no connection open
            for home in (a, b):
                db = home.path / "kanban" / "boards" / "default" / "kanban.db"
                for side in (Path(f"{db}-wal"), Path(f"{db}-shm")):
                    side.unlink(missing_ok=True)
                with open(db, "r+b") as f:
                    f.write(b"not a database " * 100)
            continue
        rc_a, out_a, err_a, went = _run(a, True, list(argv), {}, tmp_path)
        rc_b, out_b, err_b, _ = _run(b, False, list(argv), {}, tmp_path)
        shown = " ".join(argv)
        if went != way:
            problems.append(f"{shown}: went the {went} way, expected {way}")
        if (rc_a, out_a, err_a) != (rc_b, out_b, err_b):
            problems.append(f"{shown}:\n  fast  {rc_a} {out_a!r} {err_a!r}\n  click {rc_b} {out_b!r} {err_b!r}")
        if _files(a) != _files(b):
            problems.append(f"{shown}: files differ:\n  fast  {_files(a)}\n  click {_files(b)}")
    assert not problems, "\n".join(problems)
