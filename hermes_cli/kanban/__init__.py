"""hermes kanban: the public Python API used by the CLI, the dispatcher, the TUI, the tests and the benchmarks.

    from hermes_cli.kanban import Board
    with Board.open("default") as board:
        task, _ = board.create_task("write the report", priority=5)
        claim = board.claim(task.id, worker="me")
        board.complete(task.id, claim.run_id, summary="done")
"""

from .core.errors import (
    AlreadyClaimed,
    BoardBusy,
    BoardReadOnly,
    Conflict,
    CorruptBoard,
    HermesError,
    InvalidTransition,
    InvalidValue,
    LeaseHeld,
    NotFound,
    StaleRun,
    StorageError,
    UsageError,
)
from .core.models import Claim, Comment, Event, Run, RunOutcome, Task, TaskDetail, TaskStatus
from .core.paths import BoardPaths, resolve
from .domain.board import DEFAULT_LEASE_S, Board, retry_delay

__all__ = [
    "DEFAULT_LEASE_S", "AlreadyClaimed", "Board", "BoardBusy", "BoardPaths", "BoardReadOnly", "Claim", "Comment",
    "Conflict", "CorruptBoard", "Event", "HermesError", "InvalidTransition", "InvalidValue", "LeaseHeld", "NotFound",
    "Run", "RunOutcome", "StaleRun", "StorageError", "Task", "TaskDetail", "TaskStatus", "UsageError", "resolve",
    "retry_delay",
]
