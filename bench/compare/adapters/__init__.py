"""One adapter module per compared system.

Every module here is imported *inside that system's own virtualenv* by ``bench/compare/worker.py``; the orchestrator
(``run.py``) never imports them. Each module exposes ``ADAPTER``, an instance of a subclass of
:class:`adapters.base.Adapter`.
"""

from __future__ import annotations

import importlib

#: adapter name -> module inside this package. The names are the ones used on run.py's command line.
MODULES = {
    "hermes-kanban": "hermes_kanban",
    "hermes-agent": "hermes_agent",
    "huey": "huey_queue",
    "litequeue": "litequeue_queue",
    "persist-queue": "persist_queue",
}


def load(name: str):
    """Return the ``ADAPTER`` object of the adapter called ``name``."""
    try:
        module_name = MODULES[name]
    except KeyError:
        raise SystemExit(f"error: unknown adapter {name!r} (known: {', '.join(MODULES)})") from None
    return importlib.import_module(f"adapters.{module_name}").ADAPTER
