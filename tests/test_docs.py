"""The docs are part of the contract.

1. Every command and subcommand registered on `hermes kanban` appears in docs/*.md with an example line starting
   `hermes kanban <name>` (optionally after `$ ` and `VAR=value` assignments).
2. The console sessions in docs/cli.md and docs/guide.md are executed, in order, in a fresh HERMES_HOME, and their
   output must be what the docs print (task ids, timestamps, ages and the temp directory normalised).
3. (slow) `pip install .` into a fresh virtualenv, then the guide's quick start run with that venv's `hermes`.

When a command's output changes on purpose, regenerate the documented outputs (real ids and times are written in):

    python tests/test_docs.py --record docs/cli.md docs/guide.md

Console blocks are fenced with ```console. A line starting `$ ` is a command; the lines up to the next command
are its output (stdout, then stderr). Supported commands: `[VAR=value ...] hermes ...`, `export VAR=value` and
`echo $?` (the previous command's exit code). An expected line ending in `...` matches any line it starts.
Values under /tmp/ in the docs (e.g. HERMES_HOME=/tmp/hermes-demo) are remapped into the test's temp directory.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXECUTED = ["cli.md", "guide.md"]

TASK_ID = re.compile(r"\bt_[0-9a-f]{12}\b")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
STAMP = re.compile(r"\d{8}T\d{6}(-[0-9a-f]{6})?")
AGO = re.compile(r"\(\d+[smhd] ago\)")
LIST_AGE = re.compile(r"^(t_[0-9a-f]{12}  [a-z]+ +p-?\d+) +\d+[smhd]  ")


# -- 1. every command is documented -----------------------------------------------------------------------------------
def command_paths() -> list[str]:
    from hermes_cli.cli import kanban

    out: list[str] = []

    def walk(group: click.Group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            path = f"{prefix}{name}"
            out.append(path)
            if isinstance(cmd, click.Group):
                walk(cmd, path + " ")

    walk(kanban, "")
    return out


def example_lines() -> list[str]:
    lines: list[str] = []
    for md in sorted(DOCS.glob("*.md")):
        for raw in md.read_text(encoding="utf-8").splitlines():
            s = raw.strip().removeprefix("$ ")
            while re.match(r"^[A-Z_][A-Z0-9_]*=\S*\s", s):  # leading VAR=value assignments
                s = s.split(None, 1)[1]
            if s.startswith("hermes kanban "):
                lines.append(s)
    return lines


@pytest.mark.parametrize("path", command_paths())
def test_every_command_is_documented_with_an_example(path: str) -> None:
    prefix = f"hermes kanban {path}"
    found = [ln for ln in example_lines() if ln == prefix or ln.startswith(prefix + " ")]
    assert found, f"no example line starting '{prefix}' in docs/*.md"


# -- 2. the documented sessions are what the commands print -----------------------------------------------------------
@dataclass
class Step:
    where: str
    command: str
    expected: list[str] = field(default_factory=list)


def parse_sessions(md: Path) -> list[Step]:
    steps: list[Step] = []
    text = md.read_text(encoding="utf-8")
    for m in re.finditer(r"^```console\n(.*?)^```", text, re.S | re.M):
        first_line = text[: m.start()].count("\n") + 2
        for i, line in enumerate(m.group(1).splitlines()):
            if line.startswith("$ "):
                steps.append(Step(f"{md.name}:{first_line + i}", line[2:]))
            elif steps:
                steps[-1].expected.append(line)
            else:
                raise AssertionError(f"{md.name}:{first_line + i}: output before any command")
    return steps


Executor = Callable[[list[str], dict[str, str]], tuple[int, str, str]]


class Session:
    """Runs documented steps, keeping the documented ids mapped to the real ones."""

    def __init__(self, tmp: Path, execute: Executor) -> None:
        self.tmp = tmp
        self.execute = execute
        self.env: dict[str, str] = {}
        self.ids: dict[str, str] = {}  # documented id -> real id
        self.paths: dict[str, str] = {}  # documented /tmp path -> real path
        self.code = 0

    def _value(self, v: str) -> str:
        if v.startswith("/tmp/"):
            top = "/".join(v.split("/")[:3])
            real = self.paths.setdefault(top, str(self.tmp / top.split("/")[2]))
            return real + v[len(top):]
        return v

    def _arg(self, a: str) -> str:
        a = TASK_ID.sub(lambda m: self.ids.get(m.group(0), m.group(0)), a)
        return self._value(a)

    def _normalise(self, line: str) -> str:
        line = self.doc_paths(line)
        line = TIMESTAMP.sub("<time>", line)
        line = STAMP.sub("<stamp>", line)
        line = AGO.sub("(<age> ago)", line)
        return LIST_AGE.sub(r"\1 <age>  ", line)

    def run(self, step: Step) -> None:
        self._compare(step, self.output(step))

    def output(self, step: Step) -> list[str]:
        """Run one step; the lines it printed (stdout, then stderr), with real ids and paths."""
        words = shlex.split(step.command)
        if words[0] == "export":
            k, v = words[1].split("=", 1)
            self.env[k] = self._arg(v)
            got: list[str] = []
        elif words == ["echo", "$?"]:
            got = [str(self.code)]
        else:
            env = dict(self.env)
            while "=" in words[0] and not words[0].startswith("-"):
                k, v = words.pop(0).split("=", 1)
                env[k] = self._arg(v)
            assert words[0] == "hermes", f"{step.where}: only hermes commands are executed: {step.command}"
            self.code, out, err = self.execute([self._arg(a) for a in words[1:]], env)
            got = out.splitlines() + err.splitlines()
        return got

    def learn_ids(self, want: list[str], got: list[str]) -> None:
        """Pair the documented ids with the printed ones, position by position."""
        for w, g in zip(want, got, strict=False):
            for doc_id, real_id in zip(TASK_ID.findall(w), TASK_ID.findall(g), strict=False):
                if doc_id not in self.ids and real_id not in self.ids.values():
                    self.ids[doc_id] = real_id

    def doc_paths(self, line: str) -> str:
        for doc, real in self.paths.items():
            line = line.replace(real, doc)
        return line

    def _compare(self, step: Step, got: list[str]) -> None:
        want = step.expected
        assert len(got) == len(want), (
            f"{step.where}: $ {step.command}\n--- documented\n" + "\n".join(want) + "\n--- printed\n" + "\n".join(got)
        )
        self.learn_ids(want, got)
        for w, g in zip(want, got, strict=True):
            g_doc = TASK_ID.sub(lambda m: next((d for d, r in self.ids.items() if r == m.group(0)), m.group(0)), g)
            w_n, g_n = self._normalise(w), self._normalise(g_doc)
            ok = g_n.startswith(w_n[:-3]) if w_n.endswith("...") else g_n == w_n
            assert ok, f"{step.where}: $ {step.command}\n  documented: {w}\n  printed:    {g}"


def _in_process(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """`hermes <argv>` through hermes_cli.main.main in this process, with `env` added to the environment."""
    from hermes_cli.main import main

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("HERMES_HOME", raising=False)  # the documented session exports its own
    yield


@pytest.mark.parametrize("name", EXECUTED)
def test_documented_sessions_print_what_the_docs_say(name: str, tmp_path: Path, clean_env: None) -> None:
    steps = parse_sessions(DOCS / name)
    assert steps, f"docs/{name} has no console session"
    session = Session(tmp_path, _in_process)
    for step in steps:
        session.run(step)


# -- 3. a fresh install does what the guide says ----------------------------------------------------------------------
@pytest.mark.slow
def test_quick_start_after_pip_install_in_a_fresh_venv(tmp_path: Path, clean_env: None) -> None:
    """`pip install .` (from a clean copy of the source) in a new venv, then the guide's quick start with it."""
    src = tmp_path / "src"
    src.mkdir()
    for item in ("pyproject.toml", "README.md", "hermes_cli", "tui"):
        if (ROOT / item).is_dir():
            shutil.copytree(ROOT / item, src / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / item, src / item)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(src)], capture_output=True, text=True,
                         timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    hermes = venv / "bin" / "hermes"

    def installed(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")} | env
        p = subprocess.run([str(hermes), *argv], capture_output=True, text=True, timeout=60, env=full, cwd=tmp_path)
        return p.returncode, p.stdout, p.stderr

    quick = parse_sessions(DOCS / "guide.md")
    session = Session(tmp_path, installed)
    for step in quick:
        session.run(step)
    assert any("create" in s.command for s in quick) and any("complete" in s.command for s in quick)


def test_the_bench_readme_indexes_every_bench_script() -> None:
    bench = ROOT / "bench"
    index = (bench / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in bench.glob("*.py")) + ["compare/"]
    missing = [s for s in scripts if f"]({s}" not in index and f"]({s}README.md)" not in index]
    assert not missing, f"bench/README.md does not list {missing} (one line each, with the command)"


# -- regenerating the documented outputs ------------------------------------------------------------------------------
def record(md: Path) -> None:
    """Rewrite the output lines of md's console sessions with what the commands print now, in a fresh temp home."""
    import tempfile

    lines = md.read_text(encoding="utf-8").splitlines()
    steps = iter(parse_sessions(md))
    out: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(Path(tmp), _in_process)
        in_block = False
        for line in lines:
            if line.startswith("```console"):
                in_block = True
            elif in_block and line.startswith("```"):
                in_block = False
            elif in_block:
                if not line.startswith("$ "):
                    continue  # an old output line: replaced below
                step = next(steps)
                command = TASK_ID.sub(lambda m: session.ids.get(m.group(0), m.group(0)), step.command)
                got = session.output(step)
                session.learn_ids(step.expected, got)
                out.append("$ " + command)
                for i, g in enumerate(session.doc_paths(g) for g in got):
                    old = step.expected[i] if i < len(step.expected) else ""
                    out.append(g[: len(old) - 3] + "..." if old.endswith("...") else g)  # keep abridged lines short
                continue
            out.append(line)
    md.write_text("\n".join(out) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--record"] or len(sys.argv) < 3:
        raise SystemExit("usage: python tests/test_docs.py --record docs/cli.md [docs/guide.md ...]")
    for name in sys.argv[2:]:
        record(Path(name).resolve())
        print(f"{name}: outputs recorded")
