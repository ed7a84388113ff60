"""Fixtures shared by every test: no test ever touches a real home."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def hermes_home(tmp_path, monkeypatch):
    """Point HERMES_HOME at a fresh temp dir and clear board-selection variables a worker shell might carry."""
    home = tmp_path / "hermes-home"
    monkeypatch.setenv("HERMES_HOME", str(home))
    for var in ("HERMES_KANBAN_DB", "HERMES_KANBAN_BOARD", "HERMES_KANBAN_TASK", "HERMES_KANBAN_RUN_ID",
                "HERMES_KANBAN_WORKSPACE", "HERMES_KANBAN_SYNCHRONOUS", "HERMES_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    return home
