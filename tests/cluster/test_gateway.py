"""ReplicatedObjectStore: an ObjectStore whose mutations reach every replica of the epoch."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from ovis.block._device import BlockError
from ovis.nbd._constants import Errno
from ovis.store import ObjectNotFound, ObjectStore
from ovis.store.testing import check_object_store

from .inproc import Node, settle, start_cluster, stop_all

OID = 0x0000_0001_0000_0007  # vid 1, index 7


def run(coro: Coroutine[Any, Any, None], limit: float = 90) -> None:
    """Run a test's coroutine; a hang fails, printing where every task waits."""

    async def bounded() -> None:
        main = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({main}, timeout=limit)
        if done:
            return main.result()
        print(f"\nstill running after {limit:g} s; every task's stack:")
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.print_stack(file=sys.stdout)
        main.cancel()
        await asyncio.wait({main}, timeout=10)
        raise AssertionError(f"the test hung for {limit:g} s (stacks above)")

    asyncio.run(bounded())


async def copies_of(nodes: list[Node], oid: int) -> dict[str, tuple[int, bytes]]:
    """Each running node's local copy of `oid`: (version, bytes)."""
    found = {}
    for node in nodes:
        if node.store is None or node.member is None:
            continue
        try:
            stat = await node.store.stat(oid)
        except ObjectNotFound:
            continue
        found[node.id] = (stat.version, bytes(await node.store.read(oid, 0, stat.length)))
    return found


def test_the_gateway_passes_the_object_store_conformance_suite(tmp_path: Path) -> None:
    clusters: list[list[Node]] = []

    async def factory() -> ObjectStore:
        nodes = await start_cluster(tmp_path / f"c{len(clusters)}", 3, 2, recovery=False)
        clusters.append(nodes)
        assert nodes[0].gateway is not None
        return nodes[0].gateway

    async def main() -> None:
        try:
            await check_object_store(factory)
        finally:
            for nodes in clusters:
                await stop_all(nodes)

    run(main())


def test_a_write_is_on_every_replica_when_it_returns(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 4, 3)
        try:
            gateway = nodes[0].gateway
            assert gateway is not None
            for i in range(20):
                oid = OID + i
                await gateway.create_and_write(oid, bytes([i]) * 8192, 5)
                await gateway.write(oid, 4096, b"x" * 100, 6)
                copies = await copies_of(nodes, oid)
                assert len(copies) == 3, copies.keys()
                assert len(set(copies.values())) == 1
                assert next(iter(copies.values()))[0] == 6
        finally:
            await stop_all(nodes)

    run(main())


def test_any_node_reads_what_another_wrote(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 3, 2)
        try:
            assert nodes[0].gateway and nodes[1].gateway and nodes[2].gateway
            for i in range(10):
                await nodes[0].gateway.create_and_write(OID + i, bytes([i + 1]) * 1000, 1)
            for node in nodes:
                assert node.gateway is not None
                for i in range(10):
                    assert bytes(await node.gateway.read(OID + i, 0, 1000)) == bytes([i + 1]) * 1000
                    assert (await node.gateway.stat(OID + i)).version == 1
            assert await nodes[2].gateway.list() == [OID + i for i in range(10)]
        finally:
            await stop_all(nodes)

    run(main())


def test_writes_go_on_after_a_replica_leaves(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 3, 2)
        try:
            gateway = nodes[0].gateway
            assert gateway is not None
            await gateway.create_and_write(OID, b"a" * 4096, 1)
            await nodes[2].stop()
            await gateway.write(OID, 0, b"b" * 4096, 2)
            await gateway.sync([OID])
            await settle(nodes)
            copies = await copies_of(nodes, OID)
            assert {v for v, _ in copies.values()} == {2}
            assert bytes(await gateway.read(OID, 0, 4096)) == b"b" * 4096
        finally:
            await stop_all(nodes)

    run(main())


def test_an_older_fencing_token_is_refused_by_every_replica(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 3, 3)
        try:
            old, new = nodes[0].gateway, nodes[1].gateway
            assert old is not None and new is not None
            vid = OID >> 32
            old.bind(vid, 10)
            await old.fence(vid, 10)
            await old.create_and_write(OID, b"old", 1)
            new.bind(vid, 20)
            await new.fence(vid, 20)
            await new.write(OID, 0, b"new", 2)
            with pytest.raises(BlockError) as caught:
                await old.write(OID, 0, b"old", 3)
            assert caught.value.errno == Errno.EPERM
            assert {d for _, d in (await copies_of(nodes, OID)).values()} == {b"new"}
        finally:
            await stop_all(nodes)

    run(main())


def test_a_revoked_volume_is_refused_before_any_replica_sees_it(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 2, 2)
        try:
            gateway = nodes[0].gateway
            assert gateway is not None
            gateway.revoke(OID >> 32, "lease lost")
            with pytest.raises(BlockError, match="lease lost") as caught:
                await gateway.create_and_write(OID, b"x", 1)
            assert caught.value.errno == Errno.EPERM
            assert await copies_of(nodes, OID) == {}
        finally:
            await stop_all(nodes)

    run(main())
