"""`python -m tui [--board SLUG] [--hub]`: the process `hermes kanban tui` turns into (os.execve), so that the CLI
package itself never imports Textual (the import-linter contract in pyproject.toml) while the user still types one
command.

`--hub` opens the hub view (read-only) of the hub configured for this host: `hermes kanban tui --hub URL` puts the
URL in HERMES_KANBAN_HUB_URL for this process, never on its command line (it may hold a password, and a command line
is visible to every user of the host); `--board` then names a board on the hub (an id, a slug or HOST:SLUG)."""

from __future__ import annotations

import argparse
import sys

from hermes_cli.kanban import HermesError
from hermes_cli.kanban.core.errors import UsageError
from hermes_cli.kanban.core.hubconf import HUB_URL_ENV, configured_hub, hub_file
from tui.app import KanbanApp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hermes kanban tui")
    parser.add_argument("--board", default=None)
    parser.add_argument("--subscription", default=None)
    parser.add_argument("--hub", action="store_true")
    args = parser.parse_args(argv)
    try:
        hub = None
        if args.hub:
            hub = configured_hub()
            if hub is None:
                raise UsageError(f"no hub configured: pass --hub URL, set {HUB_URL_ENV}, or write the URL into "
                                 f"{hub_file()}")
        KanbanApp(board=args.board, subscription=args.subscription, hub=hub).run()
    except HermesError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
