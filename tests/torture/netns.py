"""Hosts on one machine: network namespaces joined by veth pairs to a bridge in the root namespace, where the
PostgreSQL server listens. Each host can be cut off (its link set down) and reconnected. Needs root and iproute2;
`Fleet.down()` removes every namespace and link it made, also after a failure (use it as a context manager)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


@dataclass
class Fleet:
    hosts: int
    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}")
    subnet: str = field(default_factory=lambda: f"10.213.{os.getpid() % 250}")

    @property
    def bridge(self) -> str:
        return f"hkb{self.tag}"

    @property
    def server_ip(self) -> str:
        return f"{self.subnet}.1"

    def ns(self, i: int) -> str:
        return f"hk{self.tag}h{i}"

    def veth(self, i: int) -> str:
        return f"hkv{self.tag}h{i}"

    def host_ip(self, i: int) -> str:
        return f"{self.subnet}.{10 + i}"

    def up(self) -> Fleet:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.server_ip}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(self.hosts):
            ns = self.ns(i)
            ip("netns", "add", ns)
            ip("link", "add", self.veth(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", self.veth(i), "master", self.bridge)
            ip("link", "set", self.veth(i), "up")
            ip("-n", ns, "addr", "add", f"{self.host_ip(i)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", "eth0", "up")
        return self

    def cut(self, i: int) -> None:
        """Host i loses the network: its packets go nowhere (as a pulled cable or a partition)."""
        ip("link", "set", self.veth(i), "down")

    def heal(self, i: int) -> None:
        ip("link", "set", self.veth(i), "up")

    def popen(self, i: int, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        """Run `argv` on host i. `ip netns exec` execs it, so the pid is the program's own (signals reach it)."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns(i), *argv], text=True, **kwargs)  # type: ignore[call-overload]

    def run(self, i: int, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns(i), *argv], text=True, **kwargs)  # type: ignore[call-overload]

    def down(self) -> None:
        for i in range(self.hosts):
            ip("link", "del", self.veth(i), check=False)
            ip("netns", "del", self.ns(i), check=False)
        ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> Fleet:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc: object) -> None:
        self.down()
