"""hermes: command-line tools for agent fleets. `hermes kanban` is the task board."""

__version__ = "0.1.0"
