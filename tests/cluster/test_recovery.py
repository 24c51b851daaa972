"""Recovery: after an epoch change every object is back on its replicas, newest version."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ovis.cluster._model import Epoch, NodeInfo
from ovis.cluster._recovery import PREFIX_RECOVERY, Recovery
from ovis.cluster._service import StorageService
from ovis.coord import SqliteCoordinator
from ovis.store import LocalObjectStore

from .inproc import Node, settle, start_cluster, stop_all
from .test_gateway import OID, copies_of, run
from .test_peer_rpc import serving
from .test_service import FixedView

COUNT = 40


async def recovered(nodes: list[Node], timeout: float = 20) -> None:
    """Wait until every running node's recovery reached `done` in the current epoch."""
    async with asyncio.timeout(timeout):
        while True:
            running = [n for n in nodes if n.member is not None and n.recovery is not None]
            epoch = {n.member.epoch.number for n in running if n.member is not None}
            states = [n.recovery.status() for n in running if n.recovery is not None]
            if len(epoch) == 1 and all(
                s["state"] == "done" and s["epoch"] in epoch for s in states
            ):
                return
            await asyncio.sleep(0.05)


async def fill(node: Node, version: int, count: int = COUNT, size: int = 64 * 1024) -> None:
    assert node.gateway is not None
    for i in range(count):
        await node.gateway.create_and_write(OID + i, bytes([version]) * size, version)
    await node.gateway.sync()


def test_a_lost_node_s_copies_are_made_again_on_the_others(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 3, 2)
        try:
            await fill(nodes[0], 1)
            await recovered(nodes)
            await nodes[2].stop()
            await settle(nodes)
            await recovered(nodes)
            for i in range(COUNT):
                copies = await copies_of(nodes, OID + i)
                assert len(copies) == 2, (i, copies.keys())
                assert {v for v, _ in copies.values()} == {1}
        finally:
            await stop_all(nodes)

    run(main())


def test_a_returning_node_never_serves_its_stale_copies(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 3, 3)
        try:
            await fill(nodes[0], 1)
            await nodes[2].stop()
            await settle(nodes)
            await fill(nodes[0], 2)  # n2 still holds version 1 of everything
            await nodes[2].start()
            await settle(nodes)
            gateway = nodes[2].gateway
            assert gateway is not None
            for i in range(COUNT):  # at once, before its recovery may have finished
                assert bytes(await gateway.read(OID + i, 0, 10)) == bytes([2]) * 10
            await recovered(nodes)
            for i in range(COUNT):
                copies = await copies_of(nodes, OID + i)
                assert {v for v, _ in copies.values()} == {2}, i
                assert len(copies) == 3
        finally:
            await stop_all(nodes)

    run(main())


def test_an_older_copy_is_patched_with_only_the_sub_blocks_that_changed(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 3, 3)
        try:
            await fill(nodes[0], 1, count=4, size=1024 * 1024)
            await nodes[2].stop()
            await settle(nodes)
            assert nodes[0].gateway is not None
            for i in range(4):
                await nodes[0].gateway.write(OID + i, 4096, b"z" * 10, 2)
            await nodes[2].start()
            await settle(nodes)
            await recovered(nodes)
            assert nodes[2].recovery is not None
            status = nodes[2].recovery.status()
            assert status["bytes"] == 4 * 64 * 1024, status  # one sub-block each, not 1 MiB
            for i in range(4):
                copies = await copies_of(nodes, OID + i)
                assert len({d for _, d in copies.values()}) == 1
        finally:
            await stop_all(nodes)

    run(main())


def test_copies_placed_elsewhere_are_purged_once_everyone_is_done(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 2, 2)
        try:
            await fill(nodes[0], 1)
            extra = Node(tmp_path, nodes[0].db, "n9", ttl=2)
            nodes.append(extra)
            await extra.start()
            await settle(nodes)
            await recovered(nodes)
            held = [len(os.listdir(n.dir / "objects" / "obj")) for n in nodes]
            assert sum(held) == 2 * COUNT, held  # two copies each, nothing left over
            assert held[2] > 0
        finally:
            await stop_all(nodes)

    run(main())


class _Outsider(FixedView):
    """n0's view of an epoch that left it out: `members` only."""

    def __init__(self, number: int, members: tuple[NodeInfo, ...]) -> None:
        super().__init__(number)
        self._epoch = Epoch(number, members, copies=1)


def test_a_node_left_out_of_the_epoch_neither_copies_nor_purges(tmp_path: Path) -> None:
    """A node that learns an epoch without itself (it was frozen or cut off past its TTL)
    keeps what it holds for the epoch it rejoins in: placement gives it nothing in this
    one, so purging there would throw every copy away.  Here n1 is the epoch's only
    member and has reported the epoch done, which is all a purge waits for."""

    async def main() -> None:
        async with serving(tmp_path / "n1") as (n1, pool):
            n1.view.move_to(5)
            view = _Outsider(5, (NodeInfo("n1", "z1", 1.0, n1.addr),))
            store = LocalObjectStore(tmp_path / "n0" / "objects", fsync=False)
            service = StorageService(store, view)
            for i in range(4):
                await store.create_and_write(OID + i, b"kept" * 256, 1)
            async with SqliteCoordinator(tmp_path / "coord.db") as coord:
                await coord.put(PREFIX_RECOVERY + "n1", b'{"epoch": 5, "done": true}')
                recovery = Recovery(service, view, pool, coord, tmp_path)
                recovery.start()
                try:
                    async with asyncio.timeout(10):
                        while recovery.status()["state"] not in ("not a member", "done"):
                            await asyncio.sleep(0.01)
                    await asyncio.sleep(0.5)  # time enough for a purge, were there one
                    assert await store.list() == [OID + i for i in range(4)]
                    assert recovery.status()["state"] == "not a member"
                finally:
                    await recovery.aclose()
                    await store.aclose()

    run(main())
