"""What commands print: the JSON documents, the human lines and the writer, without click.

The click commands (cli/*.py) and the console script's fast path (hermes_cli/fast.py) both print through here, so a
command prints the same bytes whichever way it ran. Importing this module must never import click
(tests/test_import_budget.py).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hermes_cli.kanban.core.models import Claim, Event, Task, TaskDetail, iso
from hermes_cli.kanban.core.textsafe import inline, terminal_safe

#: the human form of an output: the text, or a function that builds it (only called without --json)
Human = str | Callable[[], str] | None


@dataclass(frozen=True)
class Out:
    """What a command prints on success: `data` with --json, else `human`."""

    data: Any
    human: Human = None

    def emit(self, as_json: bool) -> None:
        emit(as_json, self.data, self.human)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=None, separators=(", ", ": "), default=str)


def text(as_json: bool, data: Any, human: Human = None) -> str | None:
    """The text `emit` prints (without its newline), or None when it prints nothing."""
    if as_json:
        return dumps(data)
    if human is None:
        return None
    line = human() if callable(human) else human
    # The last line of defence: human output quotes text users and workers wrote (renderers already escape their
    # single-line fields with `inline`); no control sequence from it reaches the reader's terminal.
    return terminal_safe(line) if line else None


def emit(as_json: bool, data: Any, human: Human = None) -> None:
    out = text(as_json, data, human)
    if out is not None:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()


def warn(line: str) -> None:
    """One line on stderr (a note or a warning; errors are rendered by hermes_cli.main)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# -- shared pieces of human output ------------------------------------------------------------------------------------
def age(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    s = max(0.0, (now or time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def task_line(t: Task, now: float | None = None) -> str:
    tenant = f"  [{inline(t.tenant)}]" if t.tenant else ""
    return f"{t.id}  {t.status:<8} p{t.priority:<4} {age(t.created_at, now):>4}  {inline(t.title)}{tenant}"


def task_out(t: Task, **extra: object) -> dict[str, object]:
    return {**t.as_dict(), **extra}


def status_line(t: Task) -> str:
    """`ID STATUS`: what a state change (complete, block, approve, ...) prints."""
    return f"{t.id} {t.status}"


# -- the hot commands' outputs ----------------------------------------------------------------------------------------
def created(task: Task, was_created: bool) -> Out:
    """create: the task (with `task_id` too, as hermes-agent scripts read it) and whether it is new."""
    return Out(task_out(task, task_id=task.id, created=was_created), task.id)


def claim_line(claim: Claim) -> str:
    return f"{claim.task_id} run {claim.run_id} lease until {iso(claim.lease_expires_at)}"


def claim_data(claim: Claim) -> dict[str, object]:
    return {"task_id": claim.task_id, "run_id": claim.run_id, "lease_expires_at": iso(claim.lease_expires_at),
            "attempt": claim.attempt}


def claimed(claim: Claim) -> Out:
    return Out(claim_data(claim), claim_line(claim))


def heartbeat(claim: Claim, note: str | None) -> Out:
    return Out({"task_id": claim.task_id, "run_id": claim.run_id, "lease_expires_at": iso(claim.lease_expires_at),
                **({"note": note} if note is not None else {})}, claim_line(claim))


def reported(t: Task) -> Out:
    """complete / block that landed on the board."""
    return Out(task_out(t, spooled=False), status_line(t))


def shown(d: TaskDetail) -> Out:
    # `task` and `latest_summary` as well: scripts written for hermes-agent read `.task.status`
    return Out({**d.as_dict(), "task": d.task.as_dict(), "latest_summary": d.task.summary}, lambda: detail(d))


def detail(d: TaskDetail) -> str:
    """The human `show`."""
    t = d.task
    now = time.time()
    lines = [
        f"{t.id}  {inline(t.title)}",
        f"  status {t.status}   priority {t.priority}   attempts {t.attempts}/{t.max_retries + 1}"
        + (f"   tenant {inline(t.tenant)}" if t.tenant else "")
        + ("   review-gated" if t.review_required else ""),
        f"  created {iso(t.created_at)} ({age(t.created_at, now)} ago)   updated {iso(t.updated_at)}",
    ]
    if t.assignee or t.created_by:
        lines.append(f"  assignee {inline(t.assignee or '-')}"
                     + (f"   created by {inline(t.created_by)}" if t.created_by else ""))
    if t.skills:
        lines.append(f"  skills {inline(', '.join(t.skills))}")
    if t.command:
        lines.append(f"  command {inline(t.command)}")
    if t.max_runtime_s:
        lines.append(f"  max runtime {t.max_runtime_s:g}s")
    if t.current_run_id:
        lines.append(f"  current run {t.current_run_id}, lease until {iso(t.lease_expires_at)}")
    if t.retry_at and t.retry_at > now:
        # never run yet: a `create --scheduled-at` (a retry's backoff follows an attempt)
        lines.append(f"  {'scheduled to start at' if t.attempts == 0 else 'retry after'} {iso(t.retry_at)}")
    if t.summary:
        lines.append(f"  summary: {inline(t.summary)}")
    if t.result is not None and t.result != t.summary:
        lines.append(f"  result: {inline(t.result)}")
    if t.block_kind and t.status in ("blocked", "todo"):
        lines.append(f"  blocked as {t.block_kind}")
    if t.body:
        lines += ["", *("  " + terminal_safe(ln) for ln in t.body.splitlines())]
    for label, items in (("parents", d.parents), ("children", d.children)):
        if items:
            lines += ["", f"{label}:"] + [f"  {p.id}  {p.status:<8} {inline(p.title)}" for p in items]
    if d.runs:
        lines += ["", "runs:"]
        for r in d.runs:
            end = f"{r.outcome or 'open'}" + (f" (exit {r.exit_code})" if r.exit_code is not None else "")
            pid = f" pid {r.pid}" if r.pid else ""
            summary = f"  {inline(r.summary)}" if r.summary else ""
            lines.append(f"  #{r.id}  {iso(r.started_at)}  {end}{pid}{summary}")
            if r.result is not None and r.result != r.summary:
                lines.append(f"        result: {inline(r.result)}")
            if r.metadata:
                lines.append(f"        metadata: {inline(json.dumps(r.metadata, ensure_ascii=False, sort_keys=True))}")
    if d.comments:
        lines += ["", "comments:"] + [f"  {iso(c.created_at)} {inline(c.author or '-')}: {inline(c.body)}"
                                      for c in d.comments]
    if d.events:
        lines += ["", "events:"] + [f"  {e.id:>6} {iso(e.created_at)} {_event_line(e)}" for e in d.events]
    return "\n".join(lines)


def _event_line(e: Event) -> str:
    """An event's kind; a kept git worktree also says why (the one event whose next step only its payload holds)."""
    if e.kind == "workspace_kept" and e.payload.get("reason"):
        return f"{inline(e.kind)}: {inline(str(e.payload['reason']))}"
    return inline(e.kind)
