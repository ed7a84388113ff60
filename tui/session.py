"""Which board the TUI shows, and the name of the subscription that keeps its place on that board."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hermes_cli.kanban.core.errors import HermesError
from hermes_cli.kanban.core.paths import resolve
from hermes_cli.kanban.domain.board import Board


@dataclass(frozen=True, slots=True)
class BoardRef:
    """Which board the app shows: a slug, or a pinned database path (None/None = the environment's default)."""

    slug: str | None = None
    db_path: str | None = None

    def open(self) -> Board:
        return Board.open(self.slug, self.db_path)

    @property
    def label(self) -> str:
        try:
            return resolve(self.slug, self.db_path).slug
        except HermesError:
            return self.slug or self.db_path or "default"


def subscription_for(slug: str) -> str:
    return "tui-" + re.sub(r"[^a-z0-9_.:-]", "-", slug.lower())[:59]
