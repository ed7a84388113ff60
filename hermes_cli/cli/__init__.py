"""The `hermes kanban` command group. Each module registers its commands on `common.kanban`."""

from . import tasks  # noqa: I001,F401  (registration by import; this order is the --help order)
from . import boards, events  # noqa: F401
from .common import kanban

__all__ = ["kanban"]
