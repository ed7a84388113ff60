"""The `hermes` console script. Renders every expected failure as one `error:` line with the contract's exit code."""

from __future__ import annotations

import os
import sys
import traceback

import click

from .cli import tasks  # noqa: F401  (registers the task commands; other command modules load on first use)
from .cli.common import fail, kanban, wants_json
from .kanban.errors import HermesError, UsageError


@click.group(name="hermes")
@click.version_option(package_name="hermes-kanban", prog_name="hermes")
def hermes() -> None:
    """hermes: tools for fleets of agent processes."""


hermes.add_command(kanban)


def main(argv: list[str] | None = None) -> None:
    as_json = wants_json(argv)
    try:
        rv = hermes.main(args=argv, prog_name="hermes", standalone_mode=False)
    except HermesError as err:
        fail(err, as_json)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        usage = UsageError(exc.format_message()) if exc.exit_code == 2 else HermesError(exc.format_message())
        fail(usage, as_json)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error of ours. Silence the flush at exit too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:  # a bug: still one line for the user, details only on request
        if os.environ.get("HERMES_DEBUG"):
            traceback.print_exc()
        fail(HermesError(f"internal error: {exc.__class__.__name__}: {exc} (set HERMES_DEBUG=1 for details)"),
             as_json)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
