"""The `hermes` console script: a click-free fast path for the commands agents run all day, else the full CLI.

Workers and scripts call `hermes kanban complete|heartbeat|block|claim|create|show` thousands of times a day, and
importing click (with what it pulls in: inspect, typing, gettext, ...) is a large share of each call's start-up.
This module parses exactly the argument shapes it knows, for those verbs, without click, and calls the same
`hermes_cli.kanban` API the click commands in cli/tasks.py call, printing the same bytes. Everything else goes to
the click CLI (`hermes_cli.main`), untouched:

- any verb, option or argument shape not listed in FAST below (`--help`, `-x`, `--`, an option given twice, a value
  that starts with `-`, `--body-file`, `show` without `--json`, ...): the click CLI parses and runs it;
- any error while doing the work (unknown task, stale run, bad value, missing board, ...): nothing was written (a
  failed write rolls back), nothing was printed, and the click CLI runs the same command again, so every error,
  `--json` error object and exit code is the click CLI's own. One exception: a report (`complete`, `block`) the
  board cannot take (busy past its retries, corrupt, read-only, full) goes straight to the click CLI's spooler, so
  a busy board is not waited for twice.

So the fast path only prints a success (as cli/tasks.py prints it) or the click CLI's own spool warning.
tests/cli/test_fast_path.py runs the same argv through both paths on identical boards and compares the output
byte for byte; tests/test_import_budget.py checks that these commands never import click. When a command in
cli/tasks.py changes what it prints or accepts, change its handler here too (or drop the verb from FAST).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

FLAG, VALUE, INT, RUN_ID, MULTI = "flag", "value", "int", "run-id", "multi"
_COMMON = {"--board": VALUE, "--json": FLAG}
#: verb -> (most positional arguments, options understood); the handlers below implement each
FAST: dict[str, tuple[int, dict[str, str]]] = {
    "create": (1, {"--body": VALUE, "--priority": VALUE, "--parent": MULTI, "--command": VALUE, "--tenant": VALUE,
                   "--idempotency-key": VALUE, "--max-runtime": VALUE, "--max-retries": INT, "--review": FLAG,
                   **_COMMON}),
    "show": (1, {"--events": INT, **_COMMON}),
    "claim": (1, {"--ttl": VALUE, "--worker": VALUE, "--tenant": VALUE, **_COMMON}),
    "heartbeat": (1, {"--run-id": RUN_ID, "--ttl": VALUE, **_COMMON}),
    "complete": (1, {"--run-id": RUN_ID, "--summary": VALUE, "--force": FLAG, **_COMMON}),
    "block": (2, {"--run-id": RUN_ID, "--reason": VALUE, "--force": FLAG, **_COMMON}),
}


#: what a command prints on success: (--json?, the JSON document, the human line)
Output = tuple[bool, Any, str]


class _Fallback(Exception):
    """This call is not for the fast path: let the click CLI handle it."""


def _parse(words: list[str], options: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    args: list[str] = []
    opts: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("--") and word != "--":
            name, eq, value = word.partition("=")
            kind = options.get(name)
            if kind is None or (name in opts and kind != MULTI):
                raise _Fallback
            if kind == FLAG:
                if eq:
                    raise _Fallback
                opts[name] = True
                continue
            if not eq:
                if i >= len(words) or words[i].startswith("-"):
                    raise _Fallback
                value = words[i]
                i += 1
            if kind in (INT, RUN_ID):
                if not (value.isascii() and value.isdigit()):
                    raise _Fallback
                number = int(value)
                if kind == RUN_ID and not 1 <= number < 2**63:
                    raise _Fallback
                opts[name] = number
            elif kind == MULTI:
                opts.setdefault(name, []).append(value)
            else:
                opts[name] = value
        elif word.startswith("-"):  # short options, `--`, `-`, negative numbers: click's business
            raise _Fallback
        else:
            args.append(word)
    return args, opts


def _emit(as_json: bool, data: Any, human: str) -> None:
    """cli/common.py emit(): the JSON document, or the human line, and a newline."""
    if as_json:
        import json

        text = json.dumps(data, indent=None, separators=(", ", ": "), default=str)
    else:
        text = human
    if text:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _env_task_and_run(task_id: str | None, run_id: int | None) -> tuple[str, int | None]:
    """cli/common.py env_task_and_run(), for the inputs it accepts (anything it would refuse: fall back)."""
    env_task = os.environ.get("HERMES_KANBAN_TASK") or None
    task = task_id or env_task
    if task is None:
        raise _Fallback
    if run_id is None and task == env_task:
        env_run = os.environ.get("HERMES_KANBAN_RUN_ID")
        if env_run:
            if not (env_run.isascii() and env_run.isdigit()) or not 1 <= int(env_run) < 2**63:
                raise _Fallback
            run_id = int(env_run)
    return task, run_id


class _Call:
    def __init__(self, board: str | None, args: list[str], opts: dict[str, Any]) -> None:
        self.board = opts.get("--board", board)
        self.args = args
        self.opts = opts
        self.as_json = bool(opts.get("--json"))

    def open(self, *, create: bool | None = False) -> Any:
        """The board, never created here except by `create` (as `hermes kanban create` does): a missing board is
        the click CLI's to handle (a worker's report never creates one)."""
        from hermes_cli.kanban.domain.board import Board

        return Board.open(self.board, create=create)

    # -- the verbs (each mirrors its command in cli/tasks.py) ---------------------------------------------------------
    def create(self) -> Output:
        if len(self.args) != 1:
            raise _Fallback
        from hermes_cli.kanban.core.values import check_priority

        o = self.opts
        prio = check_priority(o.get("--priority", "0"))
        with self.open(create=None) as b:
            task, created = b.create_task(
                self.args[0], body=o.get("--body") or "", priority=prio, parents=tuple(o.get("--parent", ())),
                command=o.get("--command"), tenant=o.get("--tenant"), idempotency_key=o.get("--idempotency-key"),
                max_runtime=o.get("--max-runtime"), max_retries=o.get("--max-retries"), review=bool(o.get("--review")),
            )
        return self.as_json, {**task.as_dict(), "created": created}, task.id

    def show(self) -> Output:
        if len(self.args) != 1 or not self.as_json:  # the human view is cli/tasks.py's _render_detail: not here
            raise _Fallback
        with self.open() as b:
            d = b.detail(self.args[0], events=max(0, self.opts.get("--events", 20)))
        return True, d.as_dict(), ""

    def claim(self) -> Output:
        from hermes_cli.kanban.core.models import iso
        from hermes_cli.kanban.domain.board import DEFAULT_LEASE_S

        o = self.opts
        with self.open() as b:
            claim = b.claim(self.args[0] if self.args else None, worker=o.get("--worker"),
                            ttl=o.get("--ttl", f"{DEFAULT_LEASE_S:g}s"), tenant=o.get("--tenant"))
        if claim is None:
            raise _Fallback  # "no ready task to claim" is the click CLI's error to print
        return (self.as_json, {"task_id": claim.task_id, "run_id": claim.run_id,
                               "lease_expires_at": iso(claim.lease_expires_at), "attempt": claim.attempt},
                f"{claim.task_id} run {claim.run_id} lease until {iso(claim.lease_expires_at)}")

    def heartbeat(self) -> Output:
        from hermes_cli.kanban.core.models import iso
        from hermes_cli.kanban.domain.board import DEFAULT_LEASE_S

        task, run = _env_task_and_run(self.args[0] if self.args else None, self.opts.get("--run-id"))
        if run is None:
            raise _Fallback
        with self.open() as b:
            claim = b.heartbeat(task, run, ttl=self.opts.get("--ttl", f"{DEFAULT_LEASE_S:g}s"))
        return (self.as_json,
                {"task_id": claim.task_id, "run_id": claim.run_id, "lease_expires_at": iso(claim.lease_expires_at)},
                f"{claim.task_id} run {claim.run_id} lease until {iso(claim.lease_expires_at)}")

    def complete(self) -> Output | None:
        task, run = _env_task_and_run(self.args[0] if self.args else None, self.opts.get("--run-id"))
        return self._report("complete", task, run, self.opts.get("--summary"))

    def block(self) -> Output | None:
        import re

        args = list(self.args)
        reason_opt = self.opts.get("--reason")
        task_id: str | None = args[0] if args else None
        reason = args[1] if len(args) > 1 else None
        if task_id is not None and not re.fullmatch(r"t_[0-9a-f]{4,32}", task_id):
            # a worker's `block "needs an API key"`: only the one-argument form, the same in every version
            if reason is not None or not os.environ.get("HERMES_KANBAN_TASK"):
                raise _Fallback
            task_id, reason = None, task_id
        if reason is not None and reason_opt is not None:
            raise _Fallback
        task, run = _env_task_and_run(task_id, self.opts.get("--run-id"))
        return self._report("block", task, run, reason if reason is not None else reason_opt)

    def _report(self, kind: str, task: str, run: int | None, summary: str | None) -> Output | None:
        """cli/reports.py report(): the report lands on the board, or, when the board cannot take it, in the spool
        through the click CLI's own spooler (its warning, its output) without trying the board a second time."""
        from hermes_cli.kanban.core.errors import StorageError
        from hermes_cli.kanban.durability import spool

        spool.check_report(kind, task, run, summary)
        force = bool(self.opts.get("--force"))
        try:
            with self.open() as b:
                if kind == "complete":
                    t = b.complete(task, run, summary=summary, force=force)
                else:
                    t = b.block(task, run, reason=summary, force=force)
        except StorageError as err:
            from .cli.reports import _spool

            _spool(kind, self.board, task, run, summary=summary, force=force, as_json=self.as_json, err=err)
            return None
        return self.as_json, {**t.as_dict(), "spooled": False}, f"{t.id} {t.status}"


def run(argv: list[str]) -> int | None:
    """Run `argv` (the words after `hermes`) on the fast path: 0 when done, None when the click CLI must run it."""
    if not argv or argv[0] != "kanban":
        return None
    words = argv[1:]
    board: str | None = None
    if words[:1] == ["--board"] and len(words) > 1 and not words[1].startswith("-"):
        board, words = words[1], words[2:]
    elif words[:1] and words[0].startswith("--board="):
        board, words = words[0].split("=", 1)[1], words[1:]
    if not words or words[0] not in FAST:
        return None
    verb, words = words[0], words[1:]
    max_args, options = FAST[verb]
    try:
        args, opts = _parse(words, options)
        if len(args) > max_args:
            raise _Fallback
        handler: Callable[[], Output | None] = getattr(_Call(board, args, opts), verb)
        try:
            out = handler()
        except (_Fallback, KeyboardInterrupt):
            raise
        except Exception:  # any failure: nothing printed, nothing written; the click CLI runs it and reports it
            raise _Fallback from None
    except _Fallback:
        return None
    # The work is done (committed, or spooled and printed): from here on a failure must not re-run it.
    if out is None:
        return 0
    try:
        _emit(*out)
    except BrokenPipeError:
        raise
    except Exception as exc:  # as hermes_cli.main reports a bug: one line, details only with HERMES_DEBUG
        if os.environ.get("HERMES_DEBUG"):
            import traceback

            traceback.print_exc()
        message = _one_line(f"internal error: {exc.__class__.__name__}: {exc} (set HERMES_DEBUG=1 for details)")
        sys.stderr.write(f"error: {message}\n")
        return 1
    return 0


def _one_line(text: str) -> str:
    """cli/common.py one_line(): control characters escaped, so an error is one line."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        code = run(args)
        if code is None:
            from .main import main as click_main

            click_main(argv)
    except KeyboardInterrupt:  # as hermes_cli.main does: one line, no traceback
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:  # stdout closed early (`| head`): as hermes_cli.main does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    sys.exit(code)


if __name__ == "__main__":
    main()
