"""A text field whose keys all take effect in the order they were typed.

Textual's Input inserts a character when it takes the key from its own queue, but runs its editing keys (backspace,
the arrows, home, end, enter...) only once the key has bubbled up to the app, against whatever has the focus by
then. When `abc backspace tab 7` arrives in one read, the tab (a priority key of the app, see KanbanApp.BINDINGS)
has moved the focus before the backspace comes back up, so the backspace deleted the 7 in the next field.
TextField runs its own editing keys when it takes them from its queue, in line with the characters around them.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import Binding
from textual.widgets import Input


class TextField(Input):
    #: key -> action of Input's own bindings
    _ACTIONS: ClassVar[dict[str, str]] = {b.key: b.action for b in Binding.make_bindings(Input.BINDINGS)}

    async def on_key(self, event: events.Key) -> None:
        action = self._ACTIONS.get(event.key)
        if action is None:
            return  # a character (Input inserts it) or a key for the app
        event.stop()  # handled here: it must not bubble up and run again on the then-focused widget
        event.prevent_default()
        await self.run_action(action)
