"""A real ovis cluster on loopback, for multi-process tests and the benchmark.

`Cluster` starts etcd (1 member, or 3), formats the cluster with `ovis
cluster format --copies N`, and starts K `ovis node start --cluster URL`
processes, each with its own data directory and log file under `workdir`,
its node id `n<i>` as its zone, and a short session TTL (2 s) so that a dead
node leaves the epoch quickly.  It returns once every node reports (GET
/v1/cluster) the same epoch with all K members.

Faults are done to processes the harness started, by PID: `kill` (SIGKILL),
`stop`/`cont` (SIGSTOP/SIGCONT), `restart` (same data directory and node id,
new ports).  `wait_epoch` and `wait_recovered` poll the nodes' APIs until the
cluster has settled; both raise AssertionError with what they saw on timeout.
`close()` continues stopped nodes, sends SIGTERM to all, kills what is left
after a grace period, and always stops etcd.  `dump_logs()` prints the tail of
every log; leaving the `with` block by an exception does it.

A partition without leaving loopback: nodes listed in `blackholed` reach etcd
through a Blackhole forwarder (blackhole.py); `cut(node)` silences it, `heal(node)`
restores it.  Node-to-node traffic is not affected.  A full partition: with
`netns=True` every node runs in its own network namespace on a private bridge
(netns.py), etcd listens on the bridge, and `partition(node)` / `unpartition(node)`
take the node's link down and up: etcd, peers and clients all lose it.

The write checker lives in checker.py and is re-exported here.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.conftest import OVIS
from tests.etcd import ETCD, EtcdCluster

from .blackhole import Blackhole
from .checker import Checker, Tally
from .netns import Netns

__all__ = ["ETCD", "Blackhole", "Checker", "Cluster", "ClusterNode", "Netns", "Tally"]

MiB = 1024 * 1024
READY = re.compile(
    r"ovis node: serving volumes from (?P<data>\S+)(?: in cluster \S+)? on "
    r"\[?(?P<host>[^\s\]]+)\]?:(?P<port>\d+), api (?P<api>http://\S+)"
)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def api_get(url: str, timeout: float = 5) -> Any:
    """GET a management API URL; its JSON body (raises OSError/HTTPError)."""
    with _NO_PROXY.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def api_post(url: str, body: object, timeout: float = 10) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    with _NO_PROXY.open(request, timeout=timeout) as response:
        return json.loads(response.read())


class ClusterNode:
    """One `ovis node start` process (or the last one, after a restart)."""

    def __init__(
        self, index: int, data_dir: Path, prefix: Sequence[str] = (), bind: str = ""
    ) -> None:
        self.index = index
        self.prefix = list(prefix)  # runs the node in its network namespace, if any
        self.bind = bind or "127.0.0.1"
        self.id = f"n{index}"
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"node-{self.id}.log"
        self.logs: list[Path] = []
        self.nbd = ""  # HOST:PORT
        self.api = ""  # http://HOST:PORT
        self.stopped = False  # SIGSTOPped

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self, url: str, extra: Sequence[str]) -> None:
        self.log = self.data_dir.parent / f"node-{self.id}.{len(self.logs)}.log"
        self.logs.append(self.log)
        args = [
            *self.prefix, *OVIS, "node", "start", "--data", str(self.data_dir), "--cluster", url,
            "--bind", self.bind,
            "--node-id", self.id, "--zone", self.id, "--port", "0", "--api-port", "0",
            "--peer-port", "0", "-v", *extra,
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.nbd = self.api = ""
        self.stopped = False

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while True:
            match = READY.search(self.log.read_text(errors="replace"))
            if match:
                self.nbd = f"{match['host']}:{match['port']}"
                self.api = match["api"]
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"node {self.id} exited {self.proc.returncode}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"node {self.id} did not start:\n{self.tail()}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"node {self.id} is not running"
        os.kill(self.proc.pid, sig)

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """etcd plus `nodes` ovis nodes on 127.0.0.1, formatted with `copies` copies."""

    def __init__(
        self,
        workdir: Path,
        *,
        nodes: int = 3,
        copies: int = 2,
        etcd: int = 1,
        session_ttl: int = 2,
        node_args: Sequence[str] = (),
        blackholed: Iterable[int] = (),
        netns: bool = False,
        timeout: float = 30,
    ) -> None:
        if ETCD is None:
            raise RuntimeError("etcd is not installed (scripts/setup installs etcd-server)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.copies = copies
        self.session_ttl = session_ttl
        self.node_args = [*node_args, "--session-ttl", str(session_ttl)]
        self.faults = 0  # kills, stops, restarts, etcd kills: for the tallies
        self.net = Netns(nodes) if netns else None
        net = self.net
        self.nodes = [
            ClusterNode(i, workdir / f"data-n{i}")
            if net is None
            else ClusterNode(i, workdir / f"data-n{i}", net.prefix(i), net.ip(i))
            for i in range(nodes)
        ]
        self.blackholes: dict[int, list[Blackhole]] = {}
        try:
            self.etcd = EtcdCluster(workdir, etcd, host=net.host_ip if net else "127.0.0.1")
        except BaseException:
            if net is not None:
                net.close()
            raise
        try:
            self.etcd.wait_healthy()
            members = [e.removeprefix("http://") for e in self.etcd.endpoints]
            self.url = "etcd://" + ",".join(members)
            for index in blackholed:
                self.blackholes[index] = [Blackhole(m) for m in members]
            self.cli("cluster", "format", "--cluster", self.url, "--copies", str(copies))
            for node in self.nodes:
                node.launch(self.node_url(node.index), self.node_args)
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                node.wait_ready(deadline)
            self.wait_epoch(timeout=timeout)
        except BaseException:
            self.dump_logs()
            self.close()
            raise

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self.dump_logs()
        self.close()

    # -- addresses and commands ------------------------------------------------------

    def node_url(self, node: int) -> str:
        """The cluster URL a node was given: etcd's, or its blackholes' for a blackholed one."""
        if node in self.blackholes:
            return "etcd://" + ",".join(b.address for b in self.blackholes[node])
        return self.url

    def nbd_uri(self, node: int, volume: str) -> str:
        return f"nbd://{self.nodes[node].nbd}/{volume}"

    def api(self, node: int) -> str:
        return self.nodes[node].api

    def get(self, node: int, path: str) -> Any:
        url = self.nodes[node].api + path
        if self.net is not None:  # the API is on the namespace's loopback
            return self.net.call_in(node, lambda: api_get(url))
        return api_get(url)

    def post(self, node: int, path: str, body: object) -> Any:
        url = self.nodes[node].api + path
        if self.net is not None:
            return self.net.call_in(node, lambda: api_post(url, body))
        return api_post(url, body)

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60, prefix: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        """Run `ovis ARGS` (after `prefix`, say to enter a namespace); fails (showing its
        output) if `check` and it exits non-zero."""
        command = [*prefix, *OVIS, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"ovis {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def vdi(
        self, *args: str, node: int = 0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `ovis vdi ARGS --node <node's API>`."""
        prefix = self.nodes[node].prefix
        return self.cli("vdi", *args, "--node", self.api(node), check=check, prefix=prefix)

    def vdi_json(self, *args: str, node: int = 0) -> Any:
        return json.loads(self.vdi(*args, "--json", node=node).stdout)

    # -- faults ----------------------------------------------------------------------

    def kill(self, node: int) -> None:
        """SIGKILL, as a crash would; waits for the process to be gone."""
        target = self.nodes[node]
        target.signal(signal.SIGKILL)
        assert target.proc is not None
        target.proc.wait(10)
        target.stopped = False
        self.faults += 1

    def stop(self, node: int) -> None:
        """SIGSTOP: the process freezes (its sockets stay open, its session lapses)."""
        self.nodes[node].signal(signal.SIGSTOP)
        self.nodes[node].stopped = True
        self.faults += 1

    def cont(self, node: int) -> None:
        self.nodes[node].signal(signal.SIGCONT)
        self.nodes[node].stopped = False

    def kill_etcd(self, member: int) -> None:
        self.etcd.kill(member)
        self.faults += 1

    def restart(self, node: int, *extra: str, timeout: float = 30) -> None:
        """Start a dead node again on its data directory and node id (new ports)."""
        target = self.nodes[node]
        assert not target.alive, f"node {target.id} is still running"
        target.launch(self.node_url(node), [*self.node_args, *extra])
        target.wait_ready(time.monotonic() + timeout)
        self.faults += 1

    def cut(self, node: int) -> None:
        """Partition a blackholed node from etcd: its traffic there goes silent."""
        for blackhole in self.blackholes[node]:
            blackhole.cut()
        self.faults += 1

    def heal(self, node: int) -> None:
        for blackhole in self.blackholes[node]:
            blackhole.heal()

    def partition(self, node: int) -> None:
        """Take the node's network link down (netns=True): nothing reaches it or leaves it."""
        assert self.net is not None, "partition() needs Cluster(netns=True)"
        self.net.cut(node)
        self.faults += 1

    def unpartition(self, node: int) -> None:
        assert self.net is not None
        self.net.heal(node)

    def live(self) -> list[int]:
        """Nodes running and not stopped."""
        return [n.index for n in self.nodes if n.alive and not n.stopped]

    # -- waiting for the cluster -----------------------------------------------------

    def wait_epoch(
        self,
        members: Iterable[int] | None = None,
        timeout: float = 30,
        among: Iterable[int] | None = None,
    ) -> int:
        """Wait until every node of `among` (default: the live ones) reports one epoch whose
        members are `members` (default: the live nodes); its number."""
        want = {f"n{i}" for i in (self.live() if members is None else members)}
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while True:
            asked = self.live() if among is None else list(among)
            seen = {}
            for index in asked:
                with contextlib.suppress(OSError, ValueError):
                    seen[f"n{index}"] = self.get(index, "/v1/cluster")["epoch"]
            numbers = {e["epoch"] for e in seen.values()}
            if len(seen) == len(asked) and len(numbers) == 1:
                epoch = next(iter(seen.values()))
                if {m["id"] for m in epoch["members"]} == want:
                    return int(epoch["epoch"])
            if time.monotonic() > deadline:
                shown = {
                    k: (e["epoch"], sorted(m["id"] for m in e["members"])) for k, e in seen.items()
                }
                raise AssertionError(f"no common epoch with members {sorted(want)}: {shown}")
            time.sleep(0.1)

    def wait_recovered(self, timeout: float = 60) -> dict[str, Any]:
        """Wait until every live node's recovery is done for the current epoch; the statuses."""
        deadline = time.monotonic() + timeout
        while True:
            statuses: dict[str, Any] = {}
            epochs: set[int] = set()
            for index in self.live():
                with contextlib.suppress(OSError, ValueError):
                    epochs.add(self.get(index, "/v1/cluster")["epoch"]["epoch"])
                    statuses[f"n{index}"] = self.get(index, "/v1/recovery")
            done = len(statuses) == len(self.live()) and len(epochs) == 1
            done = done and all(
                s.get("state") == "done" and s.get("epoch") in epochs for s in statuses.values()
            )
            if done:
                return statuses
            if time.monotonic() > deadline:
                raise AssertionError(f"recovery not done (epochs {epochs}): {statuses}")
            time.sleep(0.2)

    # -- what is on disk -------------------------------------------------------------

    def object_files(self, node: int) -> dict[str, int]:
        """The node's object files: name (the oid in hex) -> allocated bytes."""
        found: dict[str, int] = {}
        root = self.nodes[node].data_dir / "objects" / "obj"
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(root):
                if entry.is_file():
                    found[entry.name] = entry.stat().st_blocks * 512
        return found

    def copy_counts(self, nodes: Iterable[int] | None = None) -> collections.Counter[str]:
        """How many of `nodes` (default: the live ones) hold each object."""
        counts: collections.Counter[str] = collections.Counter()
        for index in self.live() if nodes is None else nodes:
            counts.update(self.object_files(index).keys())
        return counts

    # -- the end ---------------------------------------------------------------------

    def dump_logs(self, lines: int = 80) -> None:
        for node in self.nodes:
            for log in node.logs:
                text = log.read_text(errors="replace") if log.exists() else ""
                print(f"===== {log.name} (last {lines} lines) =====")
                print("\n".join(text.splitlines()[-lines:]))

    def close(self, grace: float = 15) -> None:
        """SIGTERM every node (continuing stopped ones), SIGKILL leftovers, stop etcd."""
        try:
            running = [n for n in self.nodes if n.alive]
            for node in running:
                assert node.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.proc.pid, signal.SIGCONT)
                    os.kill(node.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for node in running:
                assert node.proc is not None
                try:
                    node.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    print(f"node {node.id} ignored SIGTERM for {grace} s: killed")
                    node.proc.kill()
                    node.proc.wait(10)
        finally:
            self.etcd.stop()
            for blackholes in self.blackholes.values():
                for blackhole in blackholes:
                    blackhole.close()
            if self.net is not None:
                self.net.close()
