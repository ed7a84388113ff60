"""The action keys' flows: ask what needs asking (typed modal dialogs), then hand the store call to `run`
(the board screen runs it in a thread worker), and say what happened once it is done."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from textual.screen import Screen

from hermes_cli.kanban.core.models import Task, TaskStatus

from ..format import clean
from ..loader import BoardLoader
from .dialogs import BoardSwitcher, ConfirmScreen, CreateTaskScreen, NewTask, PromptScreen

#: verbs whose result is already announced by a toast from the doorbell
TOASTED_VERBS = {"complete", "block"}
PAST = {"unblock": "unblocked", "approve": "approved", "archive": "archived", "comment": "commented"}


class Run(Protocol):
    def __call__(self, verb: str, task_id: str | None, **kwargs: Any) -> None: ...


class TaskActions:
    """The dialogs before an action and the toast after it, for the board screen `screen`: `target()` is the card
    an action applies to (None, explained to the person, when there is none); `run` makes the store call."""

    def __init__(self, screen: Screen[Any], target: Callable[[], Task | None], run: Run) -> None:
        self.screen = screen
        self.target = target
        self.run = run

    def create(self) -> None:
        def created(new: NewTask | None) -> None:
            if new is not None:
                self.run("create_task", None, title=new.title, priority=new.priority, tenant=new.tenant,
                         body=new.body)

        self.screen.app.push_screen(CreateTaskScreen(), created)

    def complete(self) -> None:
        task = self.target()
        if task is None:
            return
        if task.status == TaskStatus.RUNNING:
            self.confirm(f"{task.id} is running (run {task.current_run_id}).\n"
                         "Force-complete it and close the live run?",
                         "Force-complete", lambda: self.run("complete", task.id, force=True))
        else:
            self.run("complete", task.id)

    def block(self) -> None:
        task = self.target()
        if task is None:
            return

        def with_reason(reason: str | None) -> None:
            if reason is None:
                return
            if task.status == TaskStatus.RUNNING:
                self.confirm(f"{task.id} is running (run {task.current_run_id}).\nBlock it and close the live run?",
                             "Block", lambda: self.run("block", task.id, reason=reason or None, force=True))
            else:
                self.run("block", task.id, reason=reason or None)

        self.screen.app.push_screen(PromptScreen(f"Block {task.id}: why? (enter to block)", placeholder="reason",
                                                 allow_empty=True), with_reason)

    def archive(self) -> None:
        task = self.target()
        if task is None:
            return
        self.confirm(f"Archive {task.id} “{clean(task.title)}”?\nIts children stop waiting for it.", "Archive",
                     lambda: self.run("archive", task.id))

    def comment(self) -> None:
        task = self.target()
        if task is None:
            return

        def with_text(text: str | None) -> None:
            if text:
                self.run("comment", task.id, body=text, author="tui")

        self.screen.app.push_screen(PromptScreen(f"Comment on {task.id}", placeholder="comment"), with_text)

    def unblock(self) -> None:
        if (task := self.target()) is not None:
            self.run("unblock", task.id)

    def approve(self) -> None:
        if (task := self.target()) is not None:
            self.run("approve", task.id)

    def confirm(self, question: str, yes: str, then: Callable[[], object]) -> None:
        def answered(ok: bool | None) -> None:
            if ok:
                then()

        self.screen.app.push_screen(ConfirmScreen(question, yes=yes), answered)

    def choose_board(self, slugs: list[str], current: str, then: Callable[[str], object]) -> None:
        """The board switcher over `slugs` (and the current board); `then(slug)` with the one picked."""
        def chosen(slug: str | None) -> None:
            if slug:
                then(slug)

        self.screen.app.push_screen(BoardSwitcher(sorted(set(slugs) | {current}), current), chosen)

    def announce(self, msg: BoardLoader.ActionDone) -> None:
        """Say what an action did (complete and block are announced by the doorbell's toasts instead)."""
        if msg.verb in TOASTED_VERBS:
            return
        if msg.verb == "create_task":
            task, created = msg.result
            self.screen.notify(clean(task.title), title=f"created {task.id}" if created else f"exists: {task.id}",
                               markup=False)
        elif isinstance(msg.result, Task):
            done = PAST.get(msg.verb, msg.verb)
            self.screen.notify(clean(msg.result.title), title=f"{done} {msg.task_id} → {msg.result.status}",
                               markup=False)
        else:
            self.screen.notify(f"on {msg.task_id}", title=PAST.get(msg.verb, msg.verb), markup=False)
