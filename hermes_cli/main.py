"""The `hermes` console script. Renders every expected failure as one `error:` line with the contract's exit code.

Only the standard library is imported at module level: the CLI itself (click, the board, the command modules) is
imported inside main()'s error boundary, so Ctrl-C while Python is still importing it ends like any other
interrupt (exit 130, `error: aborted`), not in a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click

#: after `error: cannot write to stdout: ...`: the command ran before its output was lost
_OUTPUT_LOST = "the output is lost; any change the command made is kept"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised the way Ctrl-C raises KeyboardInterrupt: `finally` blocks and context managers still run (a
    board is closed, a follower's FIFO removed) and the command ends with one line instead of dying mid-write.
    Commands that handle signals themselves (dispatch, events --follow) install their own handlers over this one."""


class OutputFailed(Exception):
    """Writing to stdout failed. Deliberately not an OSError: click's own handler would turn EPIPE into a silent
    exit 1, and a command's `except OSError` around board files must never mistake it for a storage problem."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


class _StdoutRaw(io.RawIOBase):
    """fd 1 for the console script's sys.stdout: every failed write becomes OutputFailed."""

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 1

    def isatty(self) -> bool:
        return os.isatty(1)

    def write(self, data: Any) -> int:
        try:
            return os.write(1, data)
        except OSError as exc:
            raise OutputFailed(exc) from None


@functools.cache
def _cli() -> click.Group:
    """The `hermes` group with the task commands registered (other command modules load on first use)."""
    import click

    from .cli import tasks  # noqa: F401  (registers the task commands)
    from .cli.common import kanban

    @click.group(name="hermes")
    @click.version_option(package_name="hermes-kanban", prog_name="hermes")
    def hermes() -> None:
        """hermes: tools for fleets of agent processes."""

    hermes.add_command(kanban)
    return hermes


def __getattr__(name: str) -> Any:
    if name == "hermes":  # `from hermes_cli.main import hermes`
        return _cli()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _wants_json(argv: list[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def _say(line: str) -> None:
    """One line on stderr (to the fd when sys.stderr is None: a closed stderr, or an interpreter half set up)."""
    try:
        if sys.stderr is not None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        else:
            os.write(2, (line + "\n").encode("utf-8", "backslashreplace"))
    except (OSError, ValueError):
        pass  # stderr is gone too: there is nobody left to tell


def _guard_standard_fds() -> bool:
    """Keep fds 0-2 taken, so no file a command opens (a lock, a FIFO, a spool file) gets one of those numbers and
    then receives output meant for the terminal. Returns False when stdout was closed."""
    stdout_open = True
    for fd, flags in ((0, os.O_RDONLY), (1, os.O_RDONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            stdout_open = stdout_open and fd != 1
            # fd 1 becomes read-only /dev/null: a stray write still fails (EBADF); main() refuses to run anyway
            null = os.open(os.devnull, flags)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    return stdout_open


def _guard_stdout() -> None:
    """In the console script, route sys.stdout through _StdoutRaw (in-process callers keep their own stdout)."""
    if sys.stdout is not sys.__stdout__:
        return
    old = sys.stdout
    if old is None:
        return
    try:
        if old.fileno() != 1:
            return
        old.flush()
    except (OSError, ValueError):
        return  # a stdout that is already broken: leave it; writes will fail through the handlers below
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(_StdoutRaw()), encoding=old.encoding, errors=old.errors,
                                  line_buffering=getattr(old, "line_buffering", False))


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush of a dead stdout cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    if not _guard_standard_fds():
        _say("error: stdout is closed (to discard the output, send it to /dev/null)")
        sys.exit(1)
    as_json = _wants_json(argv)
    _guard_stdout()
    try:
        previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        previous_term = None  # not the main thread (embedded use): keep the host's handler
    try:
        _main(argv, as_json)
    except OutputFailed as out:
        _silence_stdout()
        if out.error.errno == errno.EPIPE:
            sys.exit(0)  # the reader of our stdout is gone (`| head`): a normal end, not an error of ours
        _say(f"error: cannot write to stdout: {out.error.strerror or out.error} ({_OUTPUT_LOST})")
        sys.exit(1)
    except KeyboardInterrupt as exc:  # Ctrl-C (or SIGTERM) at any point, importing the CLI included
        word, code = ("terminated", 143) if isinstance(exc, Terminated) else ("aborted", 130)
        if as_json:
            import json

            try:
                sys.stdout.write(json.dumps({"error": {"code": word, "message": word}}) + "\n")
                sys.stdout.flush()
            except (OutputFailed, OSError, ValueError):
                _silence_stdout()  # nowhere to put it; stderr still gets the line
        _say(f"error: {word}")
        sys.exit(code)
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)


def _main(argv: list[str] | None, as_json: bool) -> None:
    import click

    from hermes_cli.kanban.core.errors import HermesError, StorageError, UsageError

    from .cli.common import fail

    try:
        rv = _invoke(argv)
    except HermesError as err:
        fail(err, as_json)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        usage = UsageError(exc.format_message()) if exc.exit_code == 2 else HermesError(exc.format_message())
        fail(usage, as_json)
    except click.exceptions.Abort:
        raise KeyboardInterrupt() from None  # one interrupt path for every way of aborting
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`) when main() runs without the console script's stdout guard
        _silence_stdout()
        sys.exit(0)
    except OSError as exc:
        # The filesystem refused something (permission denied on the home or board directory, a file where a
        # directory should be, a full disk): the storage is unusable as it is, exit 4 like an unopenable board.
        where = f"cannot access {exc.filename}" if exc.filename else "filesystem error"
        fail(StorageError(f"{where}: {exc.strerror or exc} (check HERMES_HOME, HERMES_KANBAN_DB and the owner and "
                          "mode of the board directory)"), as_json)
    except OutputFailed:
        raise  # main() says it: not a bug, and not the board's storage
    except Exception as exc:  # a bug: still one line for the user, details only on request
        if os.environ.get("HERMES_DEBUG"):
            import traceback

            traceback.print_exc()
        fail(HermesError(f"internal error: {exc.__class__.__name__}: {exc} (set HERMES_DEBUG=1 for details)"),
             as_json)
    sys.exit(rv if isinstance(rv, int) else 0)


def _invoke(argv: list[str] | None) -> Any:
    """click's Command.main without its exception handling (it prints a blank line before an interrupt, and
    turns EPIPE into a silent exit 1): main() handles every failure itself."""
    hermes = _cli()
    args = sys.argv[1:] if argv is None else list(argv)
    hermes._main_shell_completion({}, "hermes")  # completion requests (_HERMES_COMPLETE) exit here, as in click
    with hermes.make_context("hermes", args) as ctx:
        return hermes.invoke(ctx)


if __name__ == "__main__":
    main()
