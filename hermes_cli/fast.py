"""The `hermes` console script: a click-free fast path for the commands agents run all day, else the full CLI.

Workers and scripts call `hermes kanban complete|heartbeat|block|claim|create|show` thousands of times a day, and
importing click (with what it pulls in: inspect, typing, gettext, ...) is a large share of each call's start-up.
This module only parses argv, for those verbs and the argument shapes it knows, without click; the work and the
output are the click command's own: both call the same function in hermes_cli/cli/hot.py (option semantics, the
board call, spooling) and print its render.Out through hermes_cli/cli/render.py. Everything else goes to the click
CLI (`hermes_cli.main`), untouched:

- any verb, option or argument shape not listed in `_table()` below (`--help`, `-x`, `--`, an option given twice, a
  value that starts with `-`, `--body-file`, `show` without `--json`, `complete --next`, `block --ids`, ...): the
  click CLI parses and runs it;
- any error while doing the work (unknown task, stale run, bad value, missing board, ...): nothing was written (a
  failed write rolls back), nothing was printed, and the click CLI runs the same command again, so every error,
  `--json` error object and exit code is the click CLI's own. A report (`complete`, `block`) the board cannot take
  (busy past its retries, corrupt, read-only, full) is spooled by hot.report itself, as the click command does.

tests/cli/test_fast_path.py runs the same argv through both paths on identical boards and compares the output
byte for byte; tests/test_import_budget.py checks that these commands never import click. A new option of a fast
verb's click command is simply not fast until it is added to `_table()` and `run_verb` (the click CLI handles it).
"""

from __future__ import annotations

import os
import sys
from typing import Any

FLAG, VALUE, INT, RUN_ID, MULTI = "flag", "value", "int", "run-id", "multi"
#: an option's kind: one of the above, or the tuple of the values it accepts (click.Choice in the click command)
Kind = str | tuple[str, ...]
_COMMON: dict[str, Kind] = {"--board": VALUE, "--json": FLAG}
#: the verbs the fast path may take; `_table()` says which shapes of each
FAST_VERBS = frozenset({"create", "show", "claim", "heartbeat", "complete", "block"})


def _table() -> dict[str, tuple[int | None, dict[str, Kind]]]:
    """verb -> (most positional arguments, None for any number; options understood). `run_verb` maps each to its
    function in cli/hot.py, with the option names the click command gives it."""
    from .cli.hot import BLOCK_KINDS, INITIAL_STATUSES

    return {
        "create": (1, {"--body": VALUE, "--priority": VALUE, "--parent": MULTI, "--command": VALUE,
                       "--tenant": VALUE, "--idempotency-key": VALUE, "--max-runtime": VALUE, "--max-retries": INT,
                       "--review": FLAG, "--assignee": VALUE, "--created-by": VALUE, "--skill": MULTI,
                       "--triage": FLAG, "--initial-status": INITIAL_STATUSES, "--workspace": VALUE,
                       "--branch": VALUE, "--scheduled-at": VALUE, **_COMMON}),
        "show": (1, {"--events": INT, **_COMMON}),
        "claim": (1, {"--ttl": VALUE, "--worker": VALUE, "--tenant": VALUE, **_COMMON}),
        "heartbeat": (1, {"--run-id": RUN_ID, "--ttl": VALUE, "--note": VALUE, **_COMMON}),
        "complete": (1, {"--run-id": RUN_ID, "--summary": VALUE, "--result": VALUE, "--metadata": VALUE,
                         "--force": FLAG, **_COMMON}),
        "block": (None, {"--run-id": RUN_ID, "--reason": VALUE, "--kind": BLOCK_KINDS, "--force": FLAG, **_COMMON}),
    }


class _Fallback(Exception):
    """This call is not for the fast path: let the click CLI handle it."""


def _parse(words: list[str], options: dict[str, Kind]) -> tuple[list[str], dict[str, Any]]:
    """The argv shapes click would parse the same way; anything else raises _Fallback."""
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
            if isinstance(kind, tuple):
                if value not in kind:
                    raise _Fallback  # click's "not one of" usage error
                opts[name] = value
            elif kind in (INT, RUN_ID):
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


def run_verb(verb: str, board: str | None, args: list[str], opts: dict[str, Any]) -> Any:
    """Call the verb's function in cli/hot.py (what the click command calls) and return its render.Out."""
    from hermes_cli.kanban.core.paths import resolve
    from hermes_cli.kanban.store.engine import board_exists

    from .cli import hot

    o = opts.get
    slug = o("--board", board)  # the command's --board wins over the group's, as cli/common.py board_slug()
    if board_exists(resolve(slug)) is False:  # None: a PostgreSQL board, which the server knows about
        raise _Fallback  # creating a board (or saying there is none) is the click CLI's, once
    first = args[0] if args else None
    if verb == "create":
        if first is None:
            raise _Fallback  # click's "missing argument"
        return hot.create(
            slug, first, body=o("--body"), priority=o("--priority", "0"), parents=o("--parent", ()),
            command=o("--command"), tenant=o("--tenant"), idempotency_key=o("--idempotency-key"),
            max_runtime=o("--max-runtime"), max_retries=o("--max-retries"), review=bool(o("--review")),
            assignee=o("--assignee"), created_by=o("--created-by"), skills=o("--skill", ()),
            triage=bool(o("--triage")), initial_status=o("--initial-status"), workspace=o("--workspace"),
            branch=o("--branch"), scheduled_at=o("--scheduled-at"))
    if verb == "show":
        if first is None or not o("--json"):  # the human view is long and rarely scripted: the click CLI's
            raise _Fallback
        return hot.show(slug, first, events=o("--events", 20))
    if verb == "claim":
        return hot.claim(slug, first, ttl=o("--ttl", hot.DEFAULT_TTL), worker=o("--worker"), tenant=o("--tenant"))
    if verb == "heartbeat":
        return hot.heartbeat(slug, first, run_id=o("--run-id"), ttl=o("--ttl", hot.DEFAULT_TTL), note=o("--note"))
    if verb == "complete":
        return hot.complete(slug, args, run_id=o("--run-id"), summary=o("--summary"), result=o("--result"),
                            metadata=o("--metadata"), force=bool(o("--force")))
    assert verb == "block"
    return hot.block(slug, first, args[1:], run_id=o("--run-id"), reason_opt=o("--reason"), kind=o("--kind"),
                     force=bool(o("--force")))


def run(argv: list[str]) -> int | None:
    """Run `argv` (the words after `hermes`) on the fast path: 0 when done, None when the click CLI must run it."""
    if not argv or argv[0] != "kanban":
        return None
    try:
        os.fstat(1)
    except OSError:
        return None  # stdout is closed: hermes_cli.main refuses the command before it changes anything
    if sys.stdout is None:
        return None
    words = argv[1:]
    board: str | None = None
    if words[:1] == ["--board"] and len(words) > 1 and not words[1].startswith("-"):
        board, words = words[1], words[2:]
    elif words[:1] and words[0].startswith("--board="):
        board, words = words[0].split("=", 1)[1], words[1:]
    if not words or words[0] not in FAST_VERBS:
        return None
    verb, words = words[0], words[1:]
    try:
        max_args, options = _table()[verb]
        args, opts = _parse(words, options)
        if max_args is not None and len(args) > max_args:
            raise _Fallback
        try:
            out = run_verb(verb, board, args, opts)
        except (_Fallback, KeyboardInterrupt):
            raise
        except Exception as exc:  # any failure: nothing printed, nothing written; the click CLI runs it and reports it
            from hermes_cli.kanban.core.errors import BoardUnreachable

            if isinstance(exc, BoardUnreachable):
                # A PostgreSQL server lost mid-command may have committed it: running the command again through the
                # click CLI could do it twice (a second task, a second claim). Reported as the click CLI would.
                return _fail(exc.code, exc.message, exc.exit_code, bool(opts.get("--json")))
            raise _Fallback from None
    except _Fallback:
        return None
    # The work is done (committed, or spooled and printed): from here on a failure must not re-run it.
    try:
        out.emit(bool(opts.get("--json")))
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


def _fail(code: str, message: str, exit_code: int, as_json: bool) -> int:
    """cli/common.py fail(): the JSON error on stdout with --json, one `error:` line on stderr."""
    message = _one_line(message)
    if as_json:
        import json

        sys.stdout.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    sys.stderr.write(f"error: {message}\n")
    return exit_code


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
    except KeyboardInterrupt:  # as hermes_cli.main does: one line (and the JSON error with --json), no traceback
        words = args[: args.index("--")] if "--" in args else args
        if "--json" in words:
            sys.stdout.write('{"error": {"code": "aborted", "message": "aborted"}}\n')
        sys.stderr.write("error: aborted\n")
        sys.exit(130)
    except BrokenPipeError:  # stdout closed early (`| head`): as hermes_cli.main does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    sys.exit(code)


if __name__ == "__main__":
    main()
