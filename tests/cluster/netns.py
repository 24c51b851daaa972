"""Netns: a private network for a test cluster, so a partition can cut every link of a node.

One Linux bridge in the test's own namespace (address SUBNET.1, where etcd listens) and
one network namespace per node, joined to the bridge by a veth pair (the node gets
SUBNET.(10+i) on its `eth0`).  `cut(i)` takes the bridge side of node i's link down:
its etcd, peer and client traffic all stop, with no reset, as a pulled cable would;
`heal(i)` brings it back.  Needs root and iproute2; `Netns.available()` says whether
this machine allows it.  Everything is created under names made from this process's id
and removed by `close()`.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class Netns:
    """A bridge plus `count` namespaces, one per node."""

    def __init__(self, count: int) -> None:
        tag = os.getpid() % 10000
        self.subnet = f"10.213.{os.getpid() % 250}"
        self.host_ip = f"{self.subnet}.1"
        self.bridge = f"ovb{tag}"
        self.names = [f"ovis{tag}n{i}" for i in range(count)]
        self._links = [f"ovh{tag}n{i}" for i in range(count)]
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, (name, link) in enumerate(zip(self.names, self._links, strict=True)):
                _ip("netns", "add", name)
                _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", name)
                _ip("link", "set", link, "master", self.bridge, "up")
                _ip("-n", name, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
                _ip("-n", name, "link", "set", "eth0", "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def available() -> str | None:
        """None if this machine lets the tests make a bridge, namespaces and veth pairs
        (root and iproute2) and carries traffic across them; else why not."""
        try:
            net = Netns(1)
        except OSError as exc:  # also FileNotFoundError: no `ip`
            return str(exc)
        try:  # and traffic crosses the bridge (no firewall in the way)
            with socket.create_server((net.host_ip, 0)) as listener:
                port = listener.getsockname()[1]
                probe = f"import socket; socket.create_connection(({net.host_ip!r}, {port}), 3)"
                result = subprocess.run(
                    [*net.prefix(0), sys.executable, "-c", probe], capture_output=True, timeout=20
                )
            if result.returncode != 0:
                return f"no traffic across a test bridge: {result.stderr.decode()[-200:]}"
        finally:
            net.close()
        return None

    def ip(self, node: int) -> str:
        return f"{self.subnet}.{10 + node}"

    def prefix(self, node: int) -> list[str]:
        """The command prefix that runs a program in node `node`'s namespace."""
        return ["ip", "netns", "exec", self.names[node]]

    def cut(self, node: int) -> None:
        _ip("link", "set", self._links[node], "down")

    def heal(self, node: int) -> None:
        _ip("link", "set", self._links[node], "up")

    def call_in(self, node: int, call: Callable[[], T]) -> T:
        """Run `call` on a thread inside node `node`'s namespace (say, to reach its
        loopback-only API); sockets it opens belong to that namespace."""
        result: list[T] = []
        error: list[BaseException] = []

        def run() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/var/run/netns/{self.names[node]}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(fd)
                result.append(call())
            except BaseException as exc:
                error.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

    def close(self) -> None:
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
