"""What the dispatcher may start, and with which command: shared by the loop (launch.py, supervisor.py) and by
`dispatch --dry-run` (plan.py), so a preview never disagrees with what a pass does.

A ready task runs, in this order: its own `--command`; else, when it has an assignee, that profile's command
(`[profiles.<name>] command` in the board's config.toml); else, when it has no assignee, the board's
`default_command`. An assigned task whose profile has no command is never started with another one (it would be
spawned wrong): the dispatcher skips it with one `skipped_nonspawnable` event saying why (launch.py), and it stays
ready for pull workers (`hermes kanban claim`). Tasks with no command at all are left to pull workers.
"""

from __future__ import annotations

from ..core.models import Task
from ..domain.config import DispatchSettings
from ..store import dispatch_profiles as psql
from ..store.connection import Database

#: at most this many unstartable tasks are looked at per scan (each is one event at most, written once)
SKIP_SCAN_LIMIT = 100


class Selection:
    """The dispatchable tasks of a board under `settings` (see the module docstring)."""

    def __init__(self, settings: DispatchSettings) -> None:
        self.s = settings
        #: the board's default command starts unassigned tasks that have no command of their own
        self.any_default = settings.default_command is not None
        self.profiles = dict(settings.profiles)

    def dispatchable(self, db: Database, now: float, *, limit: int) -> list[str]:
        """Ready tasks that can be started now, best first; none of an assignee at its limit
        (`[profiles.<name>] max_running`, counted on the whole board in the caller's transaction)."""
        return psql.dispatchable(db, now, any_default=self.any_default, profiles=self.profiles, limit=limit,
                                 exclude=self.assignees_at_limit(db))

    def assignees_at_limit(self, db: Database) -> set[str]:
        """Assignees that already run as many tasks as their `max_running` allows (every host counted)."""
        limits = self.s.assignee_limits
        running = psql.running_by_assignee(db, limits)
        return {name for name, n in running.items() if n >= limits[name]}

    def next_retry_at(self, db: Database, *, after: float) -> float | None:
        """The earliest retry, later than `after`, of a dispatchable task."""
        return psql.next_retry_at(db, any_default=self.any_default, profiles=self.profiles, after=after)

    def unstartable(self, db: Database) -> list[tuple[str, str]]:
        """(task id, assignee) of ready tasks whose assignee has no profile command (and no command of their own)."""
        return psql.without_profile_command(db, profiles=self.profiles, limit=SKIP_SCAN_LIMIT)

    def command_for(self, task: Task) -> str | None:
        """The command a worker for `task` runs (None: no command; the task is left to pull workers)."""
        if task.command:
            return task.command
        if task.assignee is not None:
            return self.profiles.get(task.assignee)
        return self.s.default_command

    def skip_reason(self, assignee: str, config_file: str) -> str:
        """Why a task assigned to `assignee` is not started, and what to do (the event's `reason`)."""
        return (f"no worker command for assignee {assignee}: add [profiles.{assignee}] command = \"...\" to "
                f"{config_file}, give the task a --command, or let a pull worker claim it (hermes kanban claim)")
