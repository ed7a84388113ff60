"""A host cut off from the hub by its network (a network namespace whose link goes down) and reconnected: the local
board keeps working, the sync notices (keepalives, connect timeout), retries, and the hub converges after the heal.
Needs root and iproute2 (as tests/torture's fleet test on main); every namespace and link is removed afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hermes_cli.kanban import Board
from hermes_cli.kanban.store.pg.server import ThrowawayServer

from .conftest import CMD, assert_hub_equals_local, board_id, hub_ack, last_json, wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CUT_S = 25.0  # longer than the connection's tcp_user_timeout (15 s): the sync must notice, not just stall


def ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


class Host:
    """One network namespace joined to a bridge in the root namespace by a veth pair."""

    def __init__(self) -> None:
        tag = os.getpid() % 10000
        self.bridge, self.ns, self.veth = f"hhb{tag}", f"hh{tag}", f"hhv{tag}"
        subnet = f"10.214.{os.getpid() % 250}"
        self.server_ip, self.host_ip = f"{subnet}.1", f"{subnet}.10"

    def __enter__(self) -> Host:
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.server_ip}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            ip("netns", "add", self.ns)
            ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
            ip("link", "set", self.veth, "master", self.bridge)
            ip("link", "set", self.veth, "up")
            ip("-n", self.ns, "addr", "add", f"{self.host_ip}/24", "dev", "eth0")
            ip("-n", self.ns, "link", "set", "lo", "up")
            ip("-n", self.ns, "link", "set", "eth0", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        ip("link", "del", self.veth, check=False)
        ip("netns", "del", self.ns, check=False)
        ip("link", "del", self.bridge, check=False)

    def cut(self) -> None:
        ip("link", "set", self.veth, "down")

    def heal(self) -> None:
        ip("link", "set", self.veth, "up")


def test_a_host_cut_off_from_the_hub_catches_up_after_the_heal():
    with Host() as host, ThrowawayServer(listen=host.server_ip, fsync=False) as server:
        url = server.url
        with Board.open(create=True) as b:
            b.create_task("before")
        env = {**os.environ, "HERMES_KANBAN_PG_CONNECT_TIMEOUT": "2", "PYTHONPATH": str(ROOT)}
        follower = subprocess.Popen(["ip", "netns", "exec", host.ns, *CMD, "sync", "--hub", url, "--follow", "--json"],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: _has_board() and hub_ack(url, board_id()) >= 1, 60, "the first sync")
            bid = board_id()
            host.cut()
            cut_at = time.monotonic()
            took = []
            with Board.open() as b:
                while time.monotonic() - cut_at < CUT_S:
                    t0 = time.perf_counter()
                    t, _ = b.create_task("while cut off")
                    c = b.claim(t.id, worker="w")
                    assert c is not None
                    b.complete(c.task_id, c.run_id)
                    took.append(time.perf_counter() - t0)
                    time.sleep(0.05)
                last = int(b.db.value("SELECT max(id) FROM events"))
            assert hub_ack(url, bid) < last  # nothing reached the hub while cut off
            assert max(took) < 2.0, max(took)  # the local write path never waited on the network (generous bound)
            host.heal()
            healed = time.monotonic()
            wait_for(lambda: hub_ack(url, bid) >= last, 60, "the hub to converge after the heal")
            converged = time.monotonic() - healed
        finally:
            follower.send_signal(signal.SIGTERM)
            stdout, stderr = follower.communicate(timeout=60)
        assert follower.returncode == 0, stderr
        assert last_json(stdout)["hub_errors"] >= 1 and "back after" in stderr
        assert_hub_equals_local(url)
        print(f"\npartition: cut {CUT_S:g}s, {len(took)} local cycles (max {max(took) * 1000:.0f} ms), converged "
              f"{converged:.1f}s after the heal")


def _has_board() -> bool:
    with Board.open() as b:
        return b.db.value("SELECT value FROM meta WHERE key = 'board_id'") is not None
