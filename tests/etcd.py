"""Real etcd members on loopback, started and stopped (by PID) by the tests.

Shared by tests/coord and tests/cluster (their conftests turn `etcd_cluster`
into the `etcd1`, `etcd3` and `fresh_etcd3` fixtures) and by the cluster
harness.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ETCD = shutil.which("etcd")
NO_ETCD = "etcd is not installed (apt-get install etcd-server etcd-client; scripts/setup does)"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class EtcdCluster:
    """`size` etcd members on `host` (127.0.0.1), each with its data dir and log under
    `workdir`."""

    def __init__(self, workdir: Path, size: int, host: str = "127.0.0.1") -> None:
        assert ETCD is not None
        ports = _free_ports(2 * size)
        self.names = [f"m{i}" for i in range(size)]
        self.endpoints = [f"http://{host}:{ports[2 * i]}" for i in range(size)]
        peers = [f"http://{host}:{ports[2 * i + 1]}" for i in range(size)]
        initial = ",".join(f"{n}={p}" for n, p in zip(self.names, peers, strict=True))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        for name, client, peer in zip(self.names, self.endpoints, peers, strict=True):
            log = workdir / f"etcd-{name}.log"
            args = [
                ETCD, "--name", name, "--data-dir", str(workdir / f"etcd-{name}"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"ovis-test-{ports[0]}",
                # Fast elections on loopback; also makes the minimum lease TTL 1 s.
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--log-level", "warn",
            ]  # fmt: skip
            with log.open("wb") as out:
                self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))
            self.logs.append(log)

    def wait_healthy(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        for i, endpoint in enumerate(self.endpoints):
            while not self._healthy(endpoint):
                if self.procs[i].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"etcd {endpoint} not healthy:\n{self.logs[i].read_text()}")
                time.sleep(0.05)

    @staticmethod
    def _healthy(endpoint: str) -> bool:
        try:
            with urllib.request.urlopen(f"{endpoint}/health", timeout=1) as resp:
                return bool(json.load(resp).get("health") == "true")
        except (OSError, ValueError):
            return False

    def leader(self) -> int:
        """The index of the member that is the raft leader now."""
        request = urllib.request.Request(f"{self.endpoints[0]}/v3/maintenance/status", b"{}")
        with urllib.request.urlopen(request, timeout=2) as resp:
            leader = json.load(resp)["leader"]
        for index, endpoint in enumerate(self.endpoints):
            request = urllib.request.Request(f"{endpoint}/v3/maintenance/status", b"{}")
            with urllib.request.urlopen(request, timeout=2) as resp:
                if json.load(resp)["header"]["member_id"] == leader:
                    return index
        raise RuntimeError("no member is the leader")

    def kill(self, index: int) -> None:
        """SIGKILL one member, as a crash would."""
        proc = self.procs[index]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)

    def stop(self) -> None:
        # The data dirs are thrown away, so no need for a graceful (and slow) stop.
        for index, proc in enumerate(self.procs):
            if proc.poll() is None:
                self.kill(index)


def etcd_cluster(workdir: Path, size: int) -> Iterator[EtcdCluster]:
    """Start `size` members under `workdir`; yield them healthy; always stop them."""
    if ETCD is None:
        pytest.skip(NO_ETCD)
    cluster = EtcdCluster(workdir, size)
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
