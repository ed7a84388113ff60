"""Dispatcher settings: built-in defaults, then the board's config file, then command-line flags (flags win).

The config file is `<board dir>/config.toml`; the dispatcher reads its `[dispatch]` table once at start:

    [dispatch]
    max_spawn = 4                  # workers running at once
    max_running = 20               # tasks running at once on the whole board (all hosts' dispatchers counted)
    failure_limit = 3              # give a task up after this many attempts, whatever its --max-retries allows
    max_runtime_default = "30m"    # for tasks created without --max-runtime
    default_command = "python3 worker.py {task_id}"   # for tasks created without --command
    backup_interval = "1h"         # keep the newest backup younger than this ("off" or 0: no automatic backups)

    [profiles.researcher]          # what a task assigned to `researcher` runs (when it has no --command)
    command = "python3 research.py {task_id} {workspace}"
    max_running = 2                # tasks assigned to `researcher` running at once on the whole board (optional)

Other tables in the file belong to other parts of hermes and are ignored here.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..core.errors import InvalidValue
from ..core.paths import BoardPaths
from ..core.values import check_command, check_profile, parse_duration

SECTION = "dispatch"
#: the table of assignee profiles: `[profiles.<name>] command = "..."`
PROFILES = "profiles"
_ZERO_RE = re.compile(r"^0+(?:\.0*)?\s*(?:ms|s|m|h|d)?$")
#: default of `backup_interval` (doctor compares the newest backup's age with it too)
DEFAULT_BACKUP_INTERVAL_S = 3600.0
#: values of `backup_interval` that turn automatic backups off (besides a zero duration)
_OFF = "off"


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    #: workers running at once (and, with --once, started in the one pass)
    max_spawn: int = 4
    #: tasks running at once on the whole board, every host's dispatchers and pull workers counted (None: no limit)
    max_running: int | None = None
    #: attempts after which a failing task is given up (blocked + gave_up), on top of its own --max-retries
    failure_limit: int | None = None
    #: max runtime of tasks created without --max-runtime (None: unlimited)
    max_runtime_default: float | None = None
    #: worker command of tasks created without --command (None: such tasks are left to pull workers)
    default_command: str | None = None
    #: fallback poll: the longest the dispatcher sleeps without a doorbell ring (covers lost rings)
    poll_interval: float = 2.0
    #: another dispatcher takes the board over when the lease was last refreshed longer ago than this
    lease_grace: float = 30.0
    #: lease of each worker's run; the dispatcher extends it while the worker process is alive and not paused
    worker_ttl: float = 60.0
    #: after SIGTERM to a worker's process group, SIGKILL follows after this long
    kill_grace: float = 5.0
    #: a worker that reported but keeps running is stopped after this long
    linger: float = 30.0
    #: a task's log is rotated when it reaches this size at spawn time
    log_max_bytes: int = 2 * 1024 * 1024
    #: rotated logs kept per task (<task>.log.1 .. .N)
    log_backups: int = 2
    #: wake on the board's doorbell (turn off only to measure the fallback poll)
    doorbell: bool = True
    #: take a verified backup when the newest is older than this (None: no automatic backups; auto_backup.py)
    backup_interval: float | None = DEFAULT_BACKUP_INTERVAL_S
    #: worker command by assignee profile (`[profiles.<name>] command`), for tasks without --command; an assigned
    #: task whose profile has none is not started (pull workers may claim it). Not a [dispatch] key, not a flag.
    profiles: Mapping[str, str] = field(default_factory=dict)
    #: tasks of an assignee running at once on the whole board (`[profiles.<name>] max_running`), counted like
    #: max_running in the claim's own transaction, every host's dispatchers and pull workers counted. Not a flag.
    assignee_limits: Mapping[str, int] = field(default_factory=dict)

    @property
    def refresh_interval(self) -> float:
        """How often the heartbeat refreshes the dispatcher lease and extends the workers' leases."""
        return max(0.05, min(self.lease_grace, self.worker_ttl) / 3)


_DURATIONS = {"max_runtime_default", "poll_interval", "lease_grace", "worker_ttl", "kill_grace", "linger"}
_POSITIVE_INTS = {"max_spawn": (1, 1000), "max_running": (1, 1_000_000), "failure_limit": (1, 1000),
                  "log_max_bytes": (1024, 2**40), "log_backups": (0, 100)}


def _coerce(name: str, value: Any, origin: str | None) -> Any:
    """Validate one setting. `origin` is the config file's path (None: a command-line flag)."""

    def bad(rule: str) -> InvalidValue:
        if origin is None:
            return InvalidValue(f"invalid --{name.replace('_', '-')} {value!r}: {rule}")
        return InvalidValue(f"config {origin}: {name} {rule}, got {value!r}")

    if value is None:
        return None
    if name == "backup_interval":
        if _is_off(value):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad('must be a duration like 1h, or "off"')
        try:
            return parse_duration(value, what=name)
        except InvalidValue:
            rule = 'must be a duration like 30m or 1h (at most 365d), or "off" (or 0) for no automatic backups'
            raise bad(rule) from None
    if name in _DURATIONS:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad("must be a duration like 30s")
        try:
            return parse_duration(value, what=name.replace("_", "-"))
        except InvalidValue as exc:
            if origin is None:
                raise InvalidValue(exc.message.replace(f"invalid {name.replace('_', '-')} ",
                                                       f"invalid --{name.replace('_', '-')} ", 1)) from None
            raise InvalidValue(f"config {origin}: {exc.message}") from None
    if name in _POSITIVE_INTS:
        lo, hi = _POSITIVE_INTS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise bad(f"must be an integer from {lo} to {hi}")
        return value
    if name == "doorbell":
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if name == "default_command":
        if not isinstance(value, str):
            raise bad("must be a string")
        try:
            return check_command(value)
        except InvalidValue as exc:
            raise InvalidValue(f"config {origin}: {exc.message}") from None
    raise InvalidValue(f"unknown dispatcher setting {name}")


def _is_off(value: Any) -> bool:
    """`off`, or a duration of zero (`0`, `"0"`, `"0s"`): no automatic backups."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, str):
        text = value.strip().lower()
        return text == _OFF or bool(_ZERO_RE.match(text))
    return False


def read_config(paths: BoardPaths) -> dict[str, Any]:
    """The `[dispatch]` table of the board's config file ({} when there is no file). Refuses a symlink."""
    return _table(paths, _read_file(paths), SECTION)


def _table(paths: BoardPaths, data: dict[str, Any], name: str) -> dict[str, Any]:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise InvalidValue(f"config {paths.config_file}: [{name}] must be a table")
    return section


def read_profiles(paths: BoardPaths, data: dict[str, Any] | None = None) -> dict[str, str]:
    """The `[profiles.<name>]` tables of the board's config file: {profile: command} (profiles that have one)."""
    return _read_profile_tables(paths, data)[0]


def read_assignee_limits(paths: BoardPaths, data: dict[str, Any] | None = None) -> dict[str, int]:
    """The `max_running` of the `[profiles.<name>]` tables of the board's config file: {profile: limit}."""
    return _read_profile_tables(paths, data)[1]


#: the keys of a `[profiles.<name>]` table
_PROFILE_KEYS = ("command", "max_running")


def _read_profile_tables(paths: BoardPaths, data: dict[str, Any] | None) -> tuple[dict[str, str], dict[str, int]]:
    """({profile: command}, {profile: max_running}) from the `[profiles.<name>]` tables. A table takes `command` (a
    worker command line, checked like --command) and `max_running` (an integer, like [dispatch] max_running), at
    least one of them; anything else is refused with the file named."""
    where = f"config {paths.config_file}"
    commands: dict[str, str] = {}
    limits: dict[str, int] = {}
    for name, table in _table(paths, _read_file(paths) if data is None else data, PROFILES).items():
        try:
            profile = check_profile(name, "profile name")
        except InvalidValue as exc:
            raise InvalidValue(f"{where}: [{PROFILES}.{name}]: {exc.message}") from None
        if not isinstance(table, dict):
            raise InvalidValue(f'{where}: {PROFILES}.{name} must be a table, e.g. [{PROFILES}.{name}] command = "..."')
        unknown = sorted(set(table) - set(_PROFILE_KEYS))
        if unknown:
            raise InvalidValue(f"{where}: unknown setting {PROFILES}.{name}.{unknown[0]} (known: "
                               f"{', '.join(_PROFILE_KEYS)})")
        assert profile is not None  # a name was given
        if "max_running" in table:
            lo, hi = _POSITIVE_INTS["max_running"]
            limit = table["max_running"]
            if isinstance(limit, bool) or not isinstance(limit, int) or not lo <= limit <= hi:
                raise InvalidValue(f"{where}: {PROFILES}.{name}.max_running must be an integer from {lo} to {hi}, "
                                   f"got {limit!r}")
            limits[profile] = limit
            if "command" not in table:
                continue  # a limit only: the assignee's tasks are started by their own --command (or pulled)
        command = table.get("command")
        if not isinstance(command, str):
            raise InvalidValue(f'{where}: {PROFILES}.{name}.command must be a string, e.g. command = "python3 '
                               'worker.py {task_id}"')
        try:
            checked = check_command(command)
        except InvalidValue as exc:
            raise InvalidValue(f"{where}: {PROFILES}.{name}.command: {exc.message}") from None
        assert checked is not None  # a command was given
        commands[profile] = checked
    return commands, limits


def _read_file(paths: BoardPaths) -> dict[str, Any]:
    """The whole config file ({} when there is none). Refuses a symlink."""
    path = paths.config_file
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidValue(f"cannot read config {path}: {exc.strerror} (a symlink is refused)") from None
    with os.fdopen(fd, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidValue(f"config {path} is not valid TOML: {exc}") from None
    return data


def load_settings(paths: BoardPaths, flags: Mapping[str, Any] | None = None) -> DispatchSettings:
    """Defaults, then the board's config file, then `flags` (entries whose value is None are not given)."""
    known = {f.name for f in fields(DispatchSettings)} - {"profiles", "assignee_limits"}
    data = _read_file(paths)
    commands, limits = _read_profile_tables(paths, data)
    values: dict[str, Any] = {"profiles": commands, "assignee_limits": limits}
    for name, value in _table(paths, data, SECTION).items():
        if name not in known:
            raise InvalidValue(
                f"config {paths.config_file}: unknown setting {SECTION}.{name} (known: {', '.join(sorted(known))})"
            )
        values[name] = _coerce(name, value, str(paths.config_file))
    for name, value in (flags or {}).items():
        if value is None:
            continue
        if name not in known:
            raise InvalidValue(f"unknown dispatcher setting {name}")
        values[name] = _coerce(name, value, None)
    return replace(DispatchSettings(), **values)
