"""The one error hierarchy of the domain.

Every failure a user can cause or meet is a `HermesError` subclass carrying its exit code (the CLI contract in
DESIGN.md) and a stable machine-readable `code`. Messages name the object and the way out; the CLI prints them as
`error: <message>` and never a traceback.
"""

from __future__ import annotations


class HermesError(Exception):
    """Something went wrong."""

    exit_code: int = 1
    code: str = "error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "exit_code": self.exit_code}


# -- exit 1: domain errors -------------------------------------------------------------------------------------------
class NotFound(HermesError):
    """Not found."""

    code = "not_found"


class InvalidTransition(HermesError):
    """That change is not allowed from the task's current status."""

    code = "invalid_transition"


class InvalidValue(HermesError):
    """A value is not valid."""

    code = "invalid_value"


class CycleRefused(InvalidValue):
    """That link would create a dependency cycle."""

    code = "cycle"


# -- exit 2: usage -----------------------------------------------------------------------------------------------------
class UsageError(HermesError):
    """The command line is not valid."""

    exit_code = 2
    code = "usage"


class Unsupported(UsageError):
    """A hermes-agent command this board does not provide (its language-model verbs)."""

    code = "unsupported"


# -- exit 3: conflicts (fencing) ---------------------------------------------------------------------------------------
class Conflict(HermesError):
    """Someone else holds this: a stale run, a live claim or a held lease."""

    exit_code = 3
    code = "conflict"


class StaleRun(Conflict):
    """The run is not the task's current open run; the write was fenced off and nothing changed."""

    code = "stale_run"


class AlreadyClaimed(Conflict):
    """The task is claimed by a live run."""

    code = "already_claimed"


class LeaseHeld(Conflict):
    """The dispatcher lease is held by another live dispatcher."""

    code = "lease_held"


# -- exit 4: storage unhealthy -----------------------------------------------------------------------------------------
class StorageError(HermesError):
    """The board's storage is not healthy."""

    exit_code = 4
    code = "storage"


class CorruptBoard(StorageError):
    """The board database is corrupt or not a database."""

    code = "corrupt"


class UnsupportedSQLite(StorageError):
    """The SQLite library is too old to be safe with concurrent writers."""

    code = "unsupported_sqlite"


class UnsafeFilesystem(StorageError):
    """The board lives on a filesystem where SQLite locking is not reliable."""

    code = "unsafe_filesystem"


class BoardBusy(StorageError):
    """The board stayed locked by other writers past the retry budget."""

    code = "busy"


class WriteInterrupted(BoardBusy):
    """A write gave up waiting for the board's write lock because its process is stopping now."""

    code = "interrupted"


class BoardReadOnly(StorageError):
    """The board database cannot be written."""

    code = "read_only"


class NotABoard(CorruptBoard):
    """The file the board path names is not a hermes kanban board (nothing is written next to it). Its JSON code
    stays `corrupt` (fail closed, exit 4), as it was before hermes told the two apart."""


class BoardMissing(StorageError):
    """A worker's board database does not exist (removed or moved); a worker-facing command never creates one."""

    code = "board_missing"


class BoardUnreachable(StorageError):
    """The board's PostgreSQL server cannot be reached (down, partitioned, or it dropped our connection)."""

    code = "unreachable"
