"""What the dispatcher may start, and with which command: shared by the loop (launch.py, supervisor.py) and by
`dispatch --dry-run` (plan.py), so a preview never disagrees with what a pass does.

A ready task is started with its own `--command`; without one, an unassigned task gets the board's
`default_command`. Tasks with no command at all are left to pull workers (`hermes kanban claim`).
"""

from __future__ import annotations

from ..core.models import Task
from ..domain.config import DispatchSettings
from ..store import dispatch as dsql
from ..store.connection import Database


class Selection:
    """The dispatchable tasks of a board under `settings` (see the module docstring)."""

    def __init__(self, settings: DispatchSettings) -> None:
        self.s = settings
        #: a default command makes every ready task dispatchable, not only those with a command of their own
        self.any_command = settings.default_command is not None

    def dispatchable(self, db: Database, now: float, *, limit: int) -> list[str]:
        """Ready tasks that can be started now, best first."""
        return dsql.dispatchable(db, now, any_command=self.any_command, limit=limit)

    def next_retry_at(self, db: Database, *, after: float) -> float | None:
        """The earliest retry, later than `after`, of a dispatchable task."""
        return dsql.next_retry_at(db, any_command=self.any_command, after=after)

    def command_for(self, task: Task) -> str | None:
        """The command a worker for `task` runs (None: no command; the task is left to pull workers)."""
        return task.command or self.s.default_command
