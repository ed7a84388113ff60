"""`python -m tui [--board SLUG]`: the process `hermes kanban tui` turns into (os.execv), so that the CLI package itself
never imports Textual (the import-linter contract in pyproject.toml) while the user still types one command."""

from __future__ import annotations

import argparse
import sys

from hermes_cli.kanban import HermesError
from tui.app import KanbanApp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hermes kanban tui")
    parser.add_argument("--board", default=None)
    parser.add_argument("--subscription", default=None)
    args = parser.parse_args(argv)
    try:
        KanbanApp(board=args.board, subscription=args.subscription).run()
    except HermesError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
