"""The dispatcher's background hub sync: while a long-running dispatcher serves a board and a hub is configured
(docs/hub.md), `hermes kanban sync --follow` runs beside it as a child process, restarted after RESTART_S when it
exits, and stopped (SIGTERM: it keeps its checkpoint) when the dispatcher stops.

A separate process, not a thread: the sync holds its own connections and signal handling, it never shares the
dispatcher's board connection, and a hub that hangs can never stall the dispatcher's loop. The hub package is not
imported here (it sits beside dispatch in the layers); the child is started by its command line, and the hub URL
reaches it through the environment, never its argv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..core.errors import HermesError
from ..core.hubconf import configured_hub, sync_disabled

#: wait before starting a sync that exited again (a hub that refuses us must not be hammered)
RESTART_S = 10.0
#: how long a stopping dispatcher waits for the sync to finish its batch and write its checkpoint
STOP_WAIT_S = 10.0


@contextmanager
def background_sync(slug: str, *, enabled: bool, log: Callable[[str], None]) -> Iterator[None]:
    """Run `sync --follow` for board `slug` for the duration of the block (when `enabled` and a hub is set)."""
    try:
        url = configured_hub() if enabled and not sync_disabled() else None
    except HermesError as exc:
        log(f"warning: no background hub sync: {exc.message}")
        url = None
    if url is None:
        yield
        return
    stop = threading.Event()
    current: list[subprocess.Popen[bytes]] = []
    restarts: list[int] = []
    env = dict(os.environ, HERMES_KANBAN_HUB_URL=url)
    if not env.get("HERMES_KANBAN_DB"):
        env["HERMES_KANBAN_BOARD"] = slug

    def supervise() -> None:
        while not stop.is_set():
            p = subprocess.Popen([sys.executable, "-m", "hermes_cli.main", "kanban", "sync", "--follow", "--quiet"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
                                 start_new_session=True)
            current[:] = [p]
            if not restarts:
                log(f"hub sync started (pid {p.pid})")
            code = p.wait()
            if stop.is_set():
                return
            if code:  # 0: skipped (another sync holds the lease) or stopped by someone: try again quietly
                log(f"hub sync exited {code}; restarting in {RESTART_S:g}s (see: hermes kanban doctor)")
            restarts.append(code)
            stop.wait(RESTART_S)

    thread = threading.Thread(target=supervise, name="hub-sync", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        for p in current:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    p.kill()  # the hub sync resumes from the hub's ack next time: nothing is lost
                    p.wait()
        thread.join(STOP_WAIT_S)
