"""The `hermes kanban` command group. Each module registers its commands on `common.kanban`.

`from hermes_cli.cli import kanban` gives the group with every command registered. The console script
(`hermes_cli.main`) imports only cli/tasks.py up front; the group imports the other modules when one of their
commands is used (common.LAZY_COMMANDS), which keeps `create`, `claim` and `complete` quick to start.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "kanban":
        from .common import kanban, load_all_commands

        load_all_commands()
        return kanban
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
