"""Read-only snapshots of a board for live views (the TUI): above durability, because the status line shows doctor's
verdict."""
