"""ClusterNode: registration, epochs agreed by compare-and-swap, leaving, rejoining.

Every node has its own Coordinator client, as separate processes would; the
backends are a shared SQLite file and a real 1-member etcd (wiped between
tests).  Pauses and crashes use a node in a child process, stopped by PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from ovis.cluster._config import (
    HISTORY_KEPT,
    AlreadyFormatted,
    EpochRecord,
    NodeIdInUse,
    NotFormatted,
    decode_epoch,
    encode_epoch,
    format_cluster,
    live_nodes,
    load_config,
    read_epoch,
)
from ovis.cluster._membership import ClusterNode
from ovis.cluster._model import Epoch, NodeInfo
from ovis.coord import Coordinator, open_coordinator
from tests.etcd import EtcdCluster

from .conftest import etcd_url, wipe
from .test_gateway import run

CHILD = """
import asyncio, sys
from ovis.cluster._membership import ClusterNode
from ovis.cluster._model import NodeInfo
from ovis.coord import open_coordinator

async def main() -> None:
    url, node_id, ttl = sys.argv[1], sys.argv[2], int(sys.argv[3])
    async with open_coordinator(url) as coord:
        me = NodeInfo(node_id, node_id, 1.0, "127.0.0.1:1")
        node = ClusterNode(coord, me, ttl=ttl, settle=0.05)
        await node.start()
        print("joined", node.epoch.number, flush=True)
        while True:
            await node.wait_epoch(node.epoch.number)

asyncio.run(main())
"""


def info(node_id: str, port: int = 1) -> NodeInfo:
    return NodeInfo(node_id, f"zone-{node_id}", 1.0, f"127.0.0.1:{port}")


class Nodes:
    """ClusterNodes, each on its own Coordinator client; closed (left) on exit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.open: list[tuple[ClusterNode, Coordinator]] = []

    async def __aenter__(self) -> Nodes:
        async with open_coordinator(self.url) as coord:
            await format_cluster(coord, 2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for node, coord in reversed(self.open):
            await node.aclose()
            await coord.aclose()

    def node(self, node_id: str, *, ttl: int = 2, settle: float = 0.05) -> ClusterNode:
        coord = open_coordinator(self.url)
        node = ClusterNode(coord, info(node_id), ttl=ttl, settle=settle)
        self.open.append((node, coord))
        return node

    async def start(self, node_id: str, *, ttl: int = 2, settle: float = 0.05) -> ClusterNode:
        node = self.node(node_id, ttl=ttl, settle=settle)
        await node.start()
        return node

    def coord(self, node: ClusterNode) -> Coordinator:
        return next(c for n, c in self.open if n is node)


async def until(check: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def agreed(nodes: list[ClusterNode], ids: set[str]) -> Callable[[], bool]:
    """True once every node knows the same epoch, whose members are `ids`."""
    return lambda: len({n.epoch for n in nodes}) == 1 and nodes[0].epoch.ids == ids


@pytest.fixture
def child(coord_url: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start a node in a child process; returns once it has joined.  Killed (by PID) after."""
    procs: list[subprocess.Popen[str]] = []

    def start(node_id: str, ttl: int = 1) -> subprocess.Popen[str]:
        args = [sys.executable, "-c", CHILD, coord_url, node_id, str(ttl)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().startswith("joined")
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


# -- config ---------------------------------------------------------------------


def test_formatting_twice_is_refused(sqlite_url: str) -> None:
    async def main() -> None:
        async with open_coordinator(sqlite_url) as coord:
            config = await format_cluster(coord, 3)
            with pytest.raises(AlreadyFormatted, match=r"already formatted .*3 copies"):
                await format_cluster(coord, 2)
            assert await load_config(coord) == config

    run(main())


def test_copies_outside_1_to_8_are_refused(sqlite_url: str) -> None:
    async def main() -> None:
        async with open_coordinator(sqlite_url) as coord:
            for copies in (0, 9):
                with pytest.raises(ValueError, match="between 1 and 8"):
                    await format_cluster(coord, copies)
            with pytest.raises(NotFormatted):
                await load_config(coord)

    run(main())


def test_starting_before_format_is_refused_with_the_hint(sqlite_url: str) -> None:
    async def main() -> None:
        async with open_coordinator(sqlite_url) as coord:
            node = ClusterNode(coord, info("n0"))
            with pytest.raises(NotFormatted, match=r"run `ovis cluster format --cluster URL"):
                await node.start()
            assert await live_nodes(coord) == []
            await node.aclose()

    run(main())


def test_before_any_join_the_epoch_is_zero_with_the_configured_copies(sqlite_url: str) -> None:
    async def main() -> None:
        async with open_coordinator(sqlite_url) as coord:
            await format_cluster(coord, 3)
            assert await read_epoch(coord) == (Epoch(0, (), 3), [], 0)

    run(main())


def test_the_epoch_key_keeps_the_last_100_records() -> None:
    records = [EpochRecord(i, i, ("n0",)) for i in range(1, 131)]
    epoch, history = decode_epoch(encode_epoch(Epoch(130, (info("n0"),), 1), records))
    assert epoch.number == 130
    assert len(history) == HISTORY_KEPT and history[-1] == records[-1]


# -- joining and leaving --------------------------------------------------------


def test_three_nodes_converge_on_one_epoch_and_history_records_each_join(coord_url: str) -> None:
    async def main() -> None:
        async with Nodes(coord_url) as cluster:
            nodes = [await cluster.start(f"n{i}", settle=0.2) for i in range(3)]
            await until(agreed(nodes, {"n0", "n1", "n2"}))
            epoch = nodes[0].epoch
            assert epoch.copies == 2 and epoch.member("n1") == info("n1")
            assert [(r.number, r.joined, r.left) for r in nodes[2].history] == [
                (1, ("n0",), ()),
                (2, ("n1",), ()),
                (3, ("n2",), ()),
            ]
            stored, history, revision = await read_epoch(cluster.coord(nodes[0]))
            assert stored == epoch and history == nodes[0].history and revision > 0
            assert [n.id for n in nodes[1].live()] == ["n0", "n1", "n2"]
            assert all(n.accepting_writes() for n in nodes)

    run(main())


def test_nodes_starting_together_agree_on_one_epoch(coord_url: str) -> None:
    async def main() -> None:
        async with Nodes(coord_url) as cluster:
            nodes = [cluster.node(f"n{i}") for i in range(4)]
            await asyncio.gather(*(n.start() for n in nodes))
            await until(agreed(nodes, {"n0", "n1", "n2", "n3"}))
            numbers = [r.number for r in nodes[0].history]
            assert numbers == list(range(1, nodes[0].epoch.number + 1))

    run(main())


def test_a_clean_leave_starts_an_epoch_without_the_node_within_a_second(coord_url: str) -> None:
    async def main() -> None:
        async with Nodes(coord_url) as cluster:
            nodes = [await cluster.start(f"n{i}", settle=0.2) for i in range(3)]
            await until(agreed(nodes, {"n0", "n1", "n2"}))
            before = nodes[0].epoch.number
            await nodes[1].aclose()
            await nodes[1].aclose()  # idempotent
            started = time.monotonic()
            await until(agreed([nodes[0], nodes[2]], {"n0", "n2"}), timeout=1.0)
            assert time.monotonic() - started < 1.0
            assert nodes[0].epoch.number == before + 1
            assert nodes[0].history[-1].left == ("n1",)
            assert not nodes[1].accepting_writes()

    run(main())


def test_the_last_node_to_leave_stays_in_the_last_epoch(sqlite_url: str) -> None:
    async def main() -> None:
        async with Nodes(sqlite_url) as cluster:
            node = await cluster.start("n0")
            await node.aclose()
            epoch, _, _ = await read_epoch(cluster.coord(node))
            assert epoch.ids == {"n0"} and await live_nodes(cluster.coord(node)) == []

    run(main())


def test_a_node_restarted_on_new_ports_starts_an_epoch_with_its_new_address(coord_url: str) -> None:
    async def main() -> None:
        async with Nodes(coord_url) as cluster:
            n0 = await cluster.start("n0")
            n1 = await cluster.start("n1")
            await n1.aclose()
            coord = open_coordinator(coord_url)
            cluster.open.append((n1 := ClusterNode(coord, info("n1", 2), settle=0.05), coord))
            await n1.start()
            await until(lambda: n0.epoch.member("n1") == info("n1", 2))
            last = n0.history[-1]  # "updated" if it came back before the others noticed
            assert last.joined + last.updated == ("n1",)

    run(main())


# -- identity -------------------------------------------------------------------


def test_a_duplicate_node_id_is_refused(sqlite_url: str) -> None:
    async def main() -> None:
        async with Nodes(sqlite_url) as cluster:
            first = await cluster.start("n0", ttl=1)
            with pytest.raises(NodeIdInUse, match="node id n0 is already live in the cluster"):
                await cluster.start("n0", ttl=1)
            assert first.accepting_writes() and [n.id for n in first.live()] == ["n0"]

    run(main())


@pytest.mark.parametrize("coord_url", ["etcd"], indirect=True)  # SQLite expiry: the pause test
def test_a_registration_left_by_a_killed_process_is_waited_out(
    coord_url: str, child: Callable[..., subprocess.Popen[str]]
) -> None:
    async def main() -> None:
        async with Nodes(coord_url) as cluster:
            proc = child("n0", ttl=1)
            os.kill(proc.pid, signal.SIGKILL)
            node = await cluster.start("n0")  # waits until the dead session expires
            assert node.epoch.member("n0") == info("n0")

    run(main())


# -- lost sessions --------------------------------------------------------------


def test_a_revoked_session_stops_writes_at_once_and_the_node_registers_again(
    coord_url: str,
) -> None:
    async def main() -> None:
        async with Nodes(coord_url) as cluster:
            node = await cluster.start("n0")
            old = node.session
            await cluster.coord(node).close_session(old, revoke=True)
            assert not node.accepting_writes()
            await until(node.accepting_writes)
            assert node.session is not old
            await until(lambda: [n.id for n in node.live()] == ["n0"])
            kv = await cluster.coord(node).get("ovis/nodes/n0")
            assert kv is not None and kv.session == node.session.id

    run(main())


def test_a_node_paused_past_its_ttl_rejoins_in_a_new_epoch(
    coord_url: str, child: Callable[..., subprocess.Popen[str]]
) -> None:
    async def main() -> None:
        async with Nodes(coord_url) as cluster:
            n0 = await cluster.start("n0")
            proc = child("n1", ttl=1)
            await until(lambda: n0.epoch.ids == {"n0", "n1"})
            joined = n0.epoch.number
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                await until(lambda: n0.epoch.ids == {"n0"}, timeout=6)
                assert n0.history[-1].left == ("n1",)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            await until(lambda: n0.epoch.ids == {"n0", "n1"}, timeout=6)
            assert n0.epoch.number == joined + 2
            assert n0.history[-1].joined == ("n1",)

    run(main())


def test_a_node_cut_off_from_etcd_stops_writes_then_carries_on(etcd1: EtcdCluster) -> None:
    url = etcd_url(etcd1)
    asyncio.run(wipe(url))

    async def main() -> None:
        async with Nodes(url) as cluster:
            n0 = await cluster.start("n0")
            os.kill(etcd1.procs[0].pid, signal.SIGSTOP)
            try:
                await until(lambda: not n0.accepting_writes(), timeout=4)
            finally:
                os.kill(etcd1.procs[0].pid, signal.SIGCONT)
            await until(n0.accepting_writes, timeout=10)
            n1 = await cluster.start("n1")  # n0's watch and proposer are still at work
            await until(agreed([n0, n1], {"n0", "n1"}))

    run(main())


# -- waiting for epochs ---------------------------------------------------------


def test_wait_epoch_times_out_when_nothing_changes(sqlite_url: str) -> None:
    async def main() -> None:
        async with Nodes(sqlite_url) as cluster:
            node = await cluster.start("n0")
            current = node.epoch.number
            assert await node.wait_epoch(current - 1, timeout=0) == node.epoch
            with pytest.raises(TimeoutError):
                await node.wait_epoch(current, timeout=0.2)

    run(main())


def test_every_consumer_of_changes_sees_the_newest_epoch(coord_url: str) -> None:
    async def collect(feed: AsyncIterator[Epoch], into: list[Epoch]) -> None:
        async for epoch in feed:
            into.append(epoch)

    async def main() -> None:
        async with Nodes(coord_url) as cluster:
            n0 = await cluster.start("n0")
            fast: list[Epoch] = []
            fast_task = asyncio.create_task(collect(n0.changes(), fast))
            slow = n0.changes()  # subscribed now, read only at the end
            current = n0.changes(after=0)
            assert await anext(current) == n0.epoch
            n1 = await cluster.start("n1")
            await cluster.start("n2")
            await n1.aclose()
            await until(lambda: n0.epoch.ids == {"n0", "n2"})
            newest = n0.epoch
            assert await anext(slow) == newest  # skipped the intermediate epochs
            await until(lambda: bool(fast) and fast[-1] == newest)
            numbers = [e.number for e in fast]
            assert numbers == sorted(set(numbers)) and numbers[0] > 1
            await n0.aclose()
            await asyncio.wait_for(fast_task, 1)  # every feed ends when the node closes
            with pytest.raises(StopAsyncIteration):
                await anext(slow)

    run(main())
