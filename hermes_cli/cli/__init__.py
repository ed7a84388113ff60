"""The `hermes kanban` command group. Each module registers its commands on `common.kanban`."""

from . import tasks  # noqa: I001,F401  (registration by import; this order is the --help order)
from . import boards, events  # noqa: F401
from . import live  # noqa: F401
from . import health  # noqa: F401
from . import dispatch  # noqa: F401
from .common import kanban

__all__ = ["kanban"]
