"""The Textual TUI of hermes kanban (`hermes kanban tui`). It talks to `hermes_cli.kanban` only through its public
API; the CLI imports this package lazily, inside the `tui` command."""
