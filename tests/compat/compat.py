"""Run the original hermes-agent's documented command lines (hermes_agent_lines.txt) against our `hermes`.

Each line is classified:
- works: exit 0, no traceback, and the cheap checks pass: `--json` output parses; `create --json` carries `id` and
  `task_id` (and the `assignee` asked for); `list --json` items carry `assignee` and `created_by`; lifecycle verbs
  leave the tasks they name in the status the original documents (complete -> done, archive -> archived, ...);
  `assign` sets the assignee; a streaming line (watch, tail, daemon) is still running, without an error, when
  stopped.
- exception: one of the documented exceptions (DOCUMENTED_EXCEPTIONS, the verbs that need hermes-agent's LLM),
  answering as specified: exit UNSUPPORTED_EXIT, stderr exactly one line `error: ... not supported here ...`.
- fails: anything else, with a reason and the missing feature it points at (for the report).

`python tests/compat/compat.py` prints the report (pass ratio, failing lines grouped by missing feature);
tests/compat/test_compat.py asserts the thresholds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LINES_FILE = HERE / "hermes_agent_lines.txt"

#: verbs of the original that need its LLM (triage specifier, decomposer, swarm planner). Ours answers each with one
#: line, `error: hermes kanban <verb> is not supported here ...`, and exit 2 (a usage error: no board state makes
#: the line work here, so a script should treat it like a mistyped command, not like a refused transition).
DOCUMENTED_EXCEPTIONS = frozenset({"decompose", "specify", "swarm"})
UNSUPPORTED_EXIT = 2
UNSUPPORTED_TEXT = "not supported here"

#: status a placeholder task is created in, by the verb of the first line naming it (default: ready)
STATE_FOR_VERB = {
    "unblock": "blocked", "promote": "blocked", "reclaim": "running", "request-changes": "review",
    "reopen-review": "review", "heartbeat": "running",
}
#: documented outcome of a lifecycle verb on every task id it names
STATUS_AFTER = {
    "complete": {"done"}, "archive": {"archived"}, "unblock": {"ready", "todo"}, "block": {"blocked"},
    "promote": {"ready"}, "reclaim": {"ready"},
}
PLACEHOLDER = re.compile(r"<(?:id|task_id|task|parent|child|parent_id|child_id|your-task-id)>|\bt_[a-z0-9]+\b")
REAL_ID = re.compile(r"\bt_[0-9a-f]{12}\b")
CAPTURE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=\$\(")
LINE_TIMEOUT_S = 30.0
STREAM_S = 2.0


@dataclass
class Line:
    text: str
    number: int  #: line number in the data file
    verb: str = ""
    counted: bool = True  #: False for a repeat of an earlier line (run where it stands, counted once)


@dataclass
class Block:
    sources: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)
    worker: str | None = None
    stream: bool = False
    setup: list[str] = field(default_factory=list)
    same_id: bool = False


@dataclass
class Outcome:
    line: Line
    source: str
    status: str  #: works | exception | fails
    reason: str = ""
    feature: str = ""
    command: str = ""  #: the line as run (placeholders replaced)


# -- parsing ----------------------------------------------------------------------------------------------------------
def _quotes_open(text: str) -> bool:
    quote: str | None = None
    escaped = comment = False
    prev = "\n"
    for ch in text:
        if comment:  # a shell comment runs to the end of the line; its quotes do not count
            comment = ch != "\n"
        elif escaped:
            escaped = False
        elif quote is None and ch == "#" and prev.isspace():
            comment = True
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote is None and ch in "'\"":
            quote = ch
        elif ch == quote:
            quote = None
        prev = ch
    return quote is not None


def _complete(text: str) -> bool:
    lines = text.split("\n")
    if lines[0].lstrip().startswith(("for ", "while ")) and lines[-1].strip() != "done":
        return False
    return not text.endswith("\\") and not _quotes_open(text)


def verb_of(text: str) -> str:
    at = text.find("hermes kanban")
    if at < 0:
        return ""
    try:
        words = shlex.split(text[at:].split("\n")[0].rstrip("\\"), comments=True)[2:]
    except ValueError:
        words = text[at:].split()[2:]
    while words[:1] == ["--board"]:
        words = words[2:]
    if not words:
        return ""
    if words[0] == "boards" and len(words) > 1 and not words[1].startswith("-"):
        return f"boards {words[1]}"
    return words[0]


def parse(path: Path = LINES_FILE) -> list[Block]:
    blocks: list[Block] = []
    block = Block()
    pending: list[str] = []
    start = 0
    seen: set[str] = set()
    in_source = False

    def close() -> None:
        nonlocal block
        if block.lines or block.sources:
            blocks.append(block)
        block = Block()

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if pending:
            pending.append(raw)
        elif not raw.strip():
            close()
            in_source = False
            continue
        elif raw.startswith("# source:"):
            block.sources.append(raw[len("# source:"):].strip())
            in_source = True
            continue
        elif raw.startswith("#!"):
            in_source = False
            _directive(block, raw[2:].strip())
            continue
        elif raw.startswith("#"):
            if in_source and block.sources and raw.startswith("# ") and not raw.startswith("# ---"):
                block.sources[-1] += " " + raw[2:].strip()
            continue
        else:
            in_source = False
            pending = [raw]
            start = number
        text = "\n".join(pending)
        if _complete(text):
            key = " ".join(text.split())
            block.lines.append(Line(text=text, number=start, verb=verb_of(text), counted=key not in seen))
            seen.add(key)
            pending = []
    if pending:
        raise ValueError(f"{path}:{start}: command line never ends")
    close()
    return blocks


def _directive(block: Block, text: str) -> None:
    word, _, rest = text.partition(" ")
    if word == "stream":
        block.stream = True
    elif word == "worker":
        block.worker = rest.strip()
    elif word == "state":
        name, status = rest.split()
        block.states[name] = status
    elif word == "link":
        parent, child = rest.split()
        block.links.append((parent, child))
    elif word == "setup:":
        block.setup.append(rest.strip())
    elif word == "check-same-id":
        block.same_id = True
    else:
        raise ValueError(f"unknown directive #! {text}")


# -- fixtures ---------------------------------------------------------------------------------------------------------
@contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _board(slug: str | None = None) -> Any:
    from hermes_cli.kanban.domain.board import Board

    return Board.open(slug, create=slug is None)


def _slugs() -> list[str]:
    """Every live board under HERMES_HOME: a line may have used another board (`--board`, `boards switch`)."""
    root = Path(os.environ["HERMES_HOME"]) / "kanban" / "boards"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "kanban.db").is_file() and not p.name.startswith("_"))


def _make_task(name: str, status: str) -> tuple[str, int | None]:
    """A real task standing in for placeholder `name`, in `status`. Built with the API calls every version of ours
    has had (create, claim, block, request_review, complete, archive), so the fixtures never depend on a verb
    under test."""
    with _board() as b:
        title = f"compat fixture {name}"
        if status == "todo":
            parent, _ = b.create_task(f"{title} (open parent)")
            task, _ = b.create_task(title, parents=[parent.id])
            return task.id, None
        task, _ = b.create_task(title)
        run: int | None = None
        if status in ("running", "review"):
            claim = b.claim(task.id, worker="compat", ttl="1h")
            assert claim is not None
            run = claim.run_id
        if status == "review":
            b.request_review(task.id, run, summary="fixture")
            run = None
        elif status == "blocked":
            b.block(task.id, None, reason="fixture")
        elif status == "done":
            b.complete(task.id, None, summary="fixture")
        elif status == "archived":
            b.archive(task.id)
        elif status not in ("ready", "running"):
            raise ValueError(f"no fixture for status {status}")
        return task.id, run


def _task_dict(task_id: str) -> dict[str, Any] | None:
    from hermes_cli.kanban.core.errors import HermesError

    for slug in _slugs():
        try:
            with _board(slug) as b:
                return dict(b.get_task(task_id).as_dict())
        except HermesError:
            continue
    return None


def _task_total() -> int:
    from hermes_cli.kanban.core.errors import HermesError

    total = 0
    for slug in _slugs():
        try:
            with _board(slug) as b:
                total += int(b.stats()["total"])
        except HermesError:  # a board a line left unreadable counts as empty; the line's own checks say why
            continue
    return total


# -- running ----------------------------------------------------------------------------------------------------------
def _feature(verb: str, stderr: str) -> str:
    m = re.search(r"No such command '([^']+)'", stderr)
    if m:
        return f"verb `{m.group(1)}`" if not verb.startswith("boards") else f"verb `boards {m.group(1)}`"
    m = re.search(r"No such option:? '?(--?[\w-]+)", stderr)
    if m:
        return f"`{verb} {m.group(1)}`"
    if re.search(r"unexpected extra argument", stderr):
        return f"`{verb}`: several ids / extra arguments"
    if re.search(r"Missing (argument|option)", stderr):
        return f"`{verb}`: argument shape"
    first = next((ln for ln in stderr.splitlines() if ln.strip()), "")
    return f"`{verb}`: {first[:110]}"


class Runner:
    def __init__(self, hermes_bin_dir: str | None = None) -> None:
        self.bin_dir = hermes_bin_dir or str(Path(sys.executable).parent)

    def run(self, blocks: list[Block]) -> list[Outcome]:
        out: list[Outcome] = []
        for block in blocks:
            out += self.run_block(block)
        return out

    def run_block(self, block: Block) -> list[Outcome]:
        with tempfile.TemporaryDirectory(prefix="hermes-compat-") as tmp:
            root = Path(tmp)
            home, work = root / "hermes-home", root / "work"
            work.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_KANBAN_", "HERMES_PROFILE"))}
            env.update(HERMES_HOME=str(home), HOME=str(root), PATH=f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}")
            env.pop("HERMES_TENANT", None)
            with _env(HERMES_HOME=str(home)):
                subst, worker_env = self._fixtures(block)
                for cmd in block.setup:
                    subprocess.run(["bash", "-c", _substitute(cmd, subst)], env=env, cwd=work, check=True,
                                   capture_output=True, timeout=60)
                env.update(worker_env)
                results: list[Outcome] = []
                ids_seen: list[str] = []
                for line in block.lines:
                    results.append(self._run_line(block, line, subst, env, work, ids_seen))
                if block.same_id and len(set(ids_seen)) > 1:
                    for r in results:
                        if r.status == "works":
                            r.status, r.reason = "fails", f"idempotent create gave several ids: {ids_seen}"
                            r.feature = "`create --idempotency-key`: one task per key"
            return results

    def _fixtures(self, block: Block) -> tuple[dict[str, str], dict[str, str]]:
        order: list[str] = []
        first_verb: dict[str, tuple[str, str]] = {}
        for line in block.lines:
            for m in PLACEHOLDER.finditer(line.text):
                name = m.group(0)
                if REAL_ID.fullmatch(name) or name in first_verb:
                    continue
                order.append(name)
                first_verb[name] = (line.verb, line.text)
        for name in (*block.states, *(n for pair in block.links for n in pair)):
            if name not in first_verb:
                order.append(name)
                first_verb[name] = ("", "")
        if block.worker and block.worker not in first_verb:
            order.append(block.worker)
            first_verb[block.worker] = ("", "")
        subst: dict[str, str] = {}
        runs: dict[str, int | None] = {}
        for name in order:
            verb, text = first_verb[name]
            state = block.states.get(name) or STATE_FOR_VERB.get(verb, "ready")
            if name == block.worker or (verb == "reassign" and "--reclaim" in text):
                state = "running"
            subst[name], runs[name] = _make_task(name, state)
        if block.links:
            with _board() as b:
                for parent, child in block.links:
                    b.link(subst[parent], subst[child])
        worker_env: dict[str, str] = {}
        if block.worker:
            task, run = subst[block.worker], runs[block.worker]
            worker_env = {"HERMES_KANBAN_TASK": task, "HERMES_KANBAN_RUN_ID": str(run), "TASK": task}
        return subst, worker_env

    def _run_line(self, block: Block, line: Line, subst: dict[str, str], env: dict[str, str], work: Path,
                  ids_seen: list[str]) -> Outcome:
        command = _substitute(line.text, subst)
        source = "; ".join(block.sources)
        res = Outcome(line=line, source=source, status="fails", command=command)
        capture = CAPTURE.match(command)
        block_vars = {m.group(1) for ln in block.lines if (m := CAPTURE.match(ln.text))}
        script = "set -eo pipefail\n" + command
        if capture:
            script += f'\nprintf "\\n@@CAPTURED@@%s" "${capture.group(1)}"'
        before = _task_total()
        if block.stream:
            rc, stdout, stderr, still_running = _run_stream(script, env, work)
        else:
            still_running = False
            p = subprocess.Popen(["bash", "-c", script], env=env, cwd=work, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                stdout, stderr = p.communicate(timeout=LINE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _stop_group(p)
                res.reason = f"did not return within {LINE_TIMEOUT_S:g}s"
                res.feature = f"`{line.verb}` does not return"
                return res
            rc = p.returncode
        missing = [v for v in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", command) if v in block_vars and v not in env]
        if line.verb in DOCUMENTED_EXCEPTIONS:
            lines = [ln for ln in stderr.splitlines() if ln.strip()]
            if (rc == UNSUPPORTED_EXIT and len(lines) == 1 and lines[0].startswith("error:")
                    and UNSUPPORTED_TEXT in lines[0]):
                res.status = "exception"
            else:
                res.reason = f"exit {rc}, stderr {stderr.strip()[:200]!r}: not the documented 'not supported here'"
                res.feature = f"`{line.verb}`: documented exception answer (one line, exit {UNSUPPORTED_EXIT})"
            return res
        if "Traceback (most recent call last)" in stderr:
            res.reason, res.feature = "traceback", f"`{line.verb}`: traceback"
            return res
        if still_running:
            if re.search(r"^error:", stderr, re.M):
                res.reason, res.feature = stderr.strip()[:200], _feature(line.verb, stderr)
            else:
                res.status = "works"
            return res
        if rc != 0:
            res.reason = f"exit {rc}: {stderr.strip()[:300]}"
            res.feature = _feature(line.verb, stderr)
            if missing:
                res.feature = f"(follows from an earlier failing line: ${missing[0]} never set)"
            return res
        if capture:
            value = stdout.rsplit("@@CAPTURED@@", 1)[-1].strip()
            if not value or value == "null":
                res.reason = f"${capture.group(1)} captured {value!r}"
                res.feature = f"`{line.verb} --json`: the field the line reads"
                return res
            env[capture.group(1)] = value
        problem = self._check(line, command, stdout, before, ids_seen)
        if problem:
            res.reason, res.feature = problem
            return res
        res.status = "works"
        return res

    def _check(self, line: Line, command: str, stdout: str, before: int, ids_seen: list[str]
               ) -> tuple[str, str] | None:
        verb = line.verb
        try:
            words = shlex.split(command.split("|")[0], comments=True) if "for " not in command[:4] else []
        except ValueError:
            words = []
        as_json = "--json" in words and not CAPTURE.match(command)
        data: Any = None
        if as_json:
            try:
                data = json.loads(stdout)
            except ValueError:
                return f"--json output is not JSON: {stdout[:120]!r}", f"`{verb} --json`: JSON output"
        assignee = words[words.index("--assignee") + 1] if "--assignee" in words[:-1] else None
        if verb == "create" and data is not None:
            if not isinstance(data, dict) or not data.get("id") or data.get("task_id") != data.get("id"):
                return f"create --json lacks id/task_id: {stdout[:160]!r}", "`create --json`: `task_id` and `id`"
            ids_seen.append(str(data["id"]))
            if assignee is not None and data.get("assignee") != assignee:
                return (f"create --json assignee {data.get('assignee')!r}, asked {assignee!r}",
                        "`create --assignee`: kept and shown")
        if verb in ("list", "ls") and data is not None:
            if not isinstance(data, list):
                return "list --json is not a list", "`list --json`: a list"
            missing = sorted({k for item in data for k in ("assignee", "created_by") if k not in item})
            if missing:
                return f"list --json items lack {missing}", "`list --json`: items carry `assignee`, `created_by`"
        if verb == "create" and "--idempotency-key" not in words and "for " not in command[:4] \
                and _task_total() <= before:
            return "no task was created", "`create`: creates a task"
        if verb == "create" and assignee is not None and data is None and "for " not in command[:4]:
            newest = _newest_task()
            if newest is None or newest.get("assignee") != assignee:
                got = None if newest is None else newest.get("assignee")
                return f"created task has assignee {got!r}, asked {assignee!r}", "`create --assignee`: kept"
        ids = REAL_ID.findall(command)
        wanted = STATUS_AFTER.get(verb)
        if wanted and ids:
            if verb == "block" and "--kind" in words and words[words.index("--kind") + 1] == "dependency":
                wanted = {"todo"}
            for tid in ids if verb != "block" or "--ids" in words else ids[:1]:
                task = _task_dict(tid)
                status = None if task is None else task.get("status")
                if status not in wanted:
                    return (f"{tid} is {status} after `{verb}`, expected {'/'.join(sorted(wanted))}",
                            f"`{verb}`: every id named reaches {'/'.join(sorted(wanted))}")
        if verb == "assign" and ids and len(words) >= 5:
            want = None if words[-1] == "none" else words[-1]
            task = _task_dict(ids[0]) or {}
            if task.get("assignee", "<missing>") != want:
                return f"assignee is {task.get('assignee', '<missing>')!r}, expected {want!r}", "`assign`: assignee"
        return None


def _newest_task() -> dict[str, Any] | None:
    from hermes_cli.kanban.core.errors import HermesError

    newest: list[dict[str, Any]] = []
    for slug in _slugs():
        try:
            with _board(slug) as b:
                newest += [dict(t.as_dict()) for t in b.list_tasks(sort="newest", limit=1)]
        except HermesError:
            continue
    return max(newest, key=lambda t: str(t.get("created_at"))) if newest else None


def _substitute(text: str, subst: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: subst.get(m.group(0), m.group(0)), text)


def _stop_group(p: subprocess.Popen[str]) -> None:
    """SIGTERM the line's whole process group (bash and the hermes it started), SIGKILL if it lingers."""
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
    except ProcessLookupError:  # the group is already gone
        p.communicate()


def _run_stream(script: str, env: dict[str, str], cwd: Path) -> tuple[int | None, str, str, bool]:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(["bash", "-c", script], env=env, cwd=cwd, stdout=out, stderr=err, text=True,
                             start_new_session=True)
        deadline = time.monotonic() + STREAM_S
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        running = p.poll() is None
        if running:
            _stop_group(p)
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read(), running


# -- report -----------------------------------------------------------------------------------------------------------
@dataclass
class Summary:
    counted: list[Outcome]
    works: list[Outcome]
    exceptions: list[Outcome]
    fails: list[Outcome]

    @property
    def ratio(self) -> float:
        expected_to_work = len(self.counted) - len([o for o in self.counted if o.line.verb in DOCUMENTED_EXCEPTIONS])
        return len(self.works) / expected_to_work if expected_to_work else 1.0


def summarise(outcomes: list[Outcome]) -> Summary:
    counted = [o for o in outcomes if o.line.counted]
    return Summary(counted=counted, works=[o for o in counted if o.status == "works"],
                   exceptions=[o for o in counted if o.status == "exception"],
                   fails=[o for o in counted if o.status == "fails"])


def report(outcomes: list[Outcome]) -> str:
    s = summarise(outcomes)
    n_exc = len([o for o in s.counted if o.line.verb in DOCUMENTED_EXCEPTIONS])
    lines = [
        f"{len(s.counted)} command lines ({n_exc} of them the documented exceptions {sorted(DOCUMENTED_EXCEPTIONS)})",
        f"works: {len(s.works)} of {len(s.counted) - n_exc} = {s.ratio:.0%}   "
        f"exceptions answered as documented: {len(s.exceptions)} of {n_exc}   fails: {len(s.fails)}",
    ]
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in s.fails:
        groups[o.feature].append(o)
    if groups:
        lines.append("\nfailing lines by missing feature:")
    for feature, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"\n  {feature}  ({len(items)})")
        for o in items:
            first = " ".join(o.line.text.split())
            lines.append(f"    l.{o.line.number}: {first[:150]}")
            lines.append(f"        -> {o.reason[:200]}")
    return "\n".join(lines)


def main() -> int:
    outcomes = Runner().run(parse())
    print(report(outcomes))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    sys.exit(main())
