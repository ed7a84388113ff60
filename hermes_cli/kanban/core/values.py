"""Parsing and validating user-supplied values. Every failure is an InvalidValue naming the value and the fix."""

from __future__ import annotations

import re

from .errors import InvalidValue

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
MAX_TITLE = 500
MAX_BODY = 1_000_000
PRIORITY_RANGE = (-1000, 1000)


def parse_duration(text: str | float | int, *, what: str = "duration") -> float:
    """`90s`, `30m`, `2h`, `1d`, `250ms` or a bare number of seconds -> seconds (> 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION_RE.match(str(text))
        if not m:
            raise InvalidValue(f"invalid {what} {text!r}: use a number with an optional unit, e.g. 90s, 30m, 2h, 1d")
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if not seconds > 0 or seconds > 365 * 86400:
        raise InvalidValue(f"invalid {what} {text!r}: must be more than 0 and at most 365d")
    return seconds


def check_title(title: str) -> str:
    t = (title or "").strip()
    if not t:
        raise InvalidValue("task title is empty: give a short description, e.g. hermes kanban create \"fix login\"")
    if len(t) > MAX_TITLE:
        raise InvalidValue(f"task title is {len(t)} characters; the limit is {MAX_TITLE} (put details in --body)")
    if any(ord(c) < 32 and c not in "\t" for c in t):
        raise InvalidValue("task title contains control characters; put multi-line text in --body")
    return t


def check_body(body: str) -> str:
    if len(body) > MAX_BODY:
        raise InvalidValue(f"task body is {len(body)} characters; the limit is {MAX_BODY}")
    return body


def check_priority(priority: int | str) -> int:
    try:
        p = int(priority)
    except (TypeError, ValueError):
        raise InvalidValue(f"invalid priority {priority!r}: use an integer from -1000 to 1000") from None
    if isinstance(priority, float) or not PRIORITY_RANGE[0] <= p <= PRIORITY_RANGE[1]:
        raise InvalidValue(f"invalid priority {priority!r}: use an integer from -1000 to 1000")
    return p


def check_retries(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 100:
        raise InvalidValue(f"invalid max-retries {n!r}: use an integer from 0 to 100")
    return n


def check_text(value: str | None, what: str, limit: int = 200) -> str | None:
    if value is None:
        return None
    v = value.strip()
    if not v or len(v) > limit or any(ord(c) < 32 for c in v):
        raise InvalidValue(f"invalid {what} {value!r}: 1-{limit} printable characters")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(
            f"invalid {what} {value!r}: it is not valid UTF-8 (check the encoding of your input)"
        ) from None
    return v


def check_task_id(task_id: str) -> str:
    if not isinstance(task_id, str) or not re.fullmatch(r"t_[0-9a-f]{4,32}", task_id):
        raise InvalidValue(f"invalid task id {task_id!r}: task ids look like t_3fa2b1c4d5e6 (see: hermes kanban list)")
    return task_id


def check_command(command: str | None) -> str | None:
    if command is None:
        return None
    if "\x00" in command:
        raise InvalidValue("invalid --command: it contains a NUL byte")
    import shlex

    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InvalidValue(f"invalid --command {command!r}: {exc}") from None
    if not argv:
        raise InvalidValue("invalid --command: it is empty")
    return command


#: hermes-agent's typed blocks: `dependency` waits in todo for open parents; the others need a person
BLOCK_KINDS = ("dependency", "needs_input", "capability", "transient")
_PROFILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,63}$")
#: hermes-agent's `create --initial-status`: running = the usual (ready, or todo while a parent is open)
INITIAL_STATUSES = ("running", "blocked")
#: what `assign ID none` (and `-`, `null`) means: unassign, as in hermes-agent
UNASSIGN_WORDS = ("none", "-", "null")


def check_profile(profile: str | None, what: str = "assignee") -> str | None:
    """A profile name (what a worker runs as): 1-64 of letters, digits and `._@:+-`, starting with a letter or
    digit. None stays None."""
    if profile is None:
        return None
    p = profile.strip()
    if not _PROFILE_RE.match(p):
        raise InvalidValue(
            f"invalid {what} {profile!r}: a profile name is 1-64 letters, digits or ._@:+- "
            "(starting with a letter or digit), e.g. researcher"
        )
    return p


def profile_or_none(word: str) -> str | None:
    """`assign`/`reassign`'s PROFILE argument: a profile name, or none/-/null to unassign."""
    return None if word.strip().lower() in UNASSIGN_WORDS else check_profile(word)


def check_block_kind(kind: str | None) -> str | None:
    if kind is None:
        return None
    if kind not in BLOCK_KINDS:
        raise InvalidValue(f"invalid block kind {kind!r}: use one of {', '.join(BLOCK_KINDS)}")
    return kind


def check_metadata(metadata: object) -> dict[str, object] | None:
    """`--metadata`: a JSON object (text is parsed). None stays None."""
    if metadata is None:
        return None
    if isinstance(metadata, str):
        import json

        try:
            metadata = json.loads(metadata)
        except ValueError as exc:
            raise InvalidValue(f"invalid --metadata: it is not JSON ({exc}); pass an object, e.g. "
                               "'{\"tests_run\": 12}'") from None
    if not isinstance(metadata, dict):
        raise InvalidValue("invalid --metadata: it must be a JSON object, e.g. '{\"tests_run\": 12}'")
    import json

    if len(json.dumps(metadata)) > MAX_BODY:
        raise InvalidValue(f"invalid --metadata: more than {MAX_BODY} characters as JSON")
    return metadata


def check_report_text(value: str | None, what: str) -> str | None:
    """A result or summary: any text up to the body limit; blank means none."""
    if value is None or not value.strip():
        return None
    if len(value) > MAX_BODY:
        raise InvalidValue(f"the {what} is {len(value)} characters; the limit is {MAX_BODY}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(f"the {what} is not valid UTF-8 (check the encoding of your input)") from None
    return value


#: what `create --workspace` takes (hermes-agent's forms)
WORKSPACE_FORMS = "scratch, worktree, worktree:PATH or dir:PATH"
_BRANCH_BAD = re.compile(r"\.\.|[\x00-\x20\x7f~^:?*\[\\]|@\{|//")


def check_workspace(value: str | None) -> str | None:
    """Where a task's worker runs: `scratch` (a directory of its own under the board), `worktree` (a git worktree of
    the board's default workdir, on its own branch), `worktree:PATH` (that worktree at PATH) or `dir:PATH` (that
    directory). Returned as stored: a PATH with `~` expanded and made absolute against the current directory (so the
    dispatcher, running elsewhere, finds the same place). None stays None (the board's default)."""
    if value is None:
        return None
    v = value.strip()
    if v in ("scratch", "worktree"):
        return v
    for prefix in ("dir:", "worktree:"):
        if v.startswith(prefix):
            path = v[len(prefix):].strip()
            if not path:
                raise InvalidValue(f"invalid --workspace {value!r}: {prefix} needs a path, e.g. {prefix}~/src/app")
            if "\x00" in path:
                raise InvalidValue(f"invalid --workspace: the path contains a NUL byte; use {WORKSPACE_FORMS}")
            import os.path  # lazily: the hot worker verbs that never name a workspace skip it

            return prefix + os.path.abspath(os.path.expanduser(path))
    raise InvalidValue(f"invalid --workspace {value!r}: use {WORKSPACE_FORMS}")


def check_branch(branch: str | None) -> str | None:
    """A git branch name for a worktree workspace (`create --branch`): no spaces or control characters, not starting
    with `-`, none of git's forbidden sequences (`..`, `~^:?*[\\`, `@{`, `//`), not ending with `/`, `.` or `.lock`."""
    if branch is None:
        return None
    b = branch.strip()
    if not b or b.startswith(("-", "/")) or b.endswith(("/", ".", ".lock")) or _BRANCH_BAD.search(b) or len(b) > 200:
        raise InvalidValue(f"invalid --branch {branch!r}: use a git branch name such as wt/fix-login (no spaces, "
                           "not starting with '-')")
    return b


def parse_time(text: str | float, *, what: str = "--scheduled-at") -> float:
    """An ISO 8601 time (`2026-06-01T03:00:00Z`, an offset, or no zone: local time), as hermes-agent's
    `create --scheduled-at` takes it, in epoch seconds. A number is taken as epoch seconds already."""
    if isinstance(text, (int, float)):
        return float(text)
    from datetime import datetime  # lazily: only a scheduled create pays for it

    try:
        return datetime.fromisoformat(text.strip()).timestamp()  # 'Z' and offsets: Python >= 3.11
    except (ValueError, OverflowError, OSError):
        raise InvalidValue(f"invalid {what} {text!r}: use an ISO 8601 time such as 2026-06-01T03:00:00Z") from None
