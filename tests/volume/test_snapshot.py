"""Snapshots are instant, read-only, and an open volume carries on past them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ovis.block import BlockError
from ovis.nbd import Errno
from ovis.store import MemoryObjectStore
from ovis.volume import SnapshotReadOnly, VolumeExists, VolumeNotFound

from .helpers import OBJ, YieldingStore, memory_library, pattern


def test_snapshot_of_an_open_volume_keeps_serving_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            created = await library.create("vm", 8 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(0, b"one")  # acknowledged, not flushed: still in the snapshot
            snap = await library.snapshot("vm", "first")
            assert snap.vid == created.vid and snap.snapshot and snap.spec == "vm@first"
            assert volume.inode.vid != created.vid and volume.inode.parent_vid == created.vid
            await volume.write(0, b"two")
            frozen = await library.open("vm@first")
            assert bytes(await frozen.read(0, 3)) == b"one"
            assert bytes(await volume.read(0, 3)) == b"two"
            await frozen.aclose()
            await volume.aclose()
            info = await library.info("vm")
            assert (info.snapshot_count, info.parent_vid) == (1, created.vid)

    asyncio.run(main())


def test_snapshot_waits_for_writes_in_flight(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path, YieldingStore()) as library:
            await library.create("vm", 64 * OBJ, object_size=OBJ)
            volume = await library.open("vm")

            snapshot = asyncio.ensure_future(library.snapshot("vm", "mid"))
            writes: list[asyncio.Future[None]] = []
            n = 0
            while n < 63 and not snapshot.done():  # keep writes coming during the snapshot
                writes.append(asyncio.ensure_future(volume.write(n * OBJ, pattern(OBJ, n))))
                n += 1
                await asyncio.sleep(0)
            await snapshot
            writes += [
                asyncio.ensure_future(volume.write(m * OBJ, pattern(OBJ, m))) for m in range(n, 64)
            ]
            await asyncio.gather(*writes)
            assert snapshot.result().tag == "mid"
            frozen = await library.open("vm@mid")
            in_snapshot = 0
            for n in range(64):  # each write is wholly in the snapshot or wholly not
                got = bytes(await frozen.read(n * OBJ, OBJ))
                assert got in (bytes(OBJ), pattern(OBJ, n)), f"object {n} is torn"
                in_snapshot += got != bytes(OBJ)
                assert bytes(await volume.read(n * OBJ, OBJ)) == pattern(OBJ, n)
            assert 0 < in_snapshot < 64, "the snapshot did not land among the writes"
            await frozen.aclose()
            await volume.aclose()

    asyncio.run(main())


def test_snapshots_refuse_writes(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("vm", 2 * OBJ, object_size=OBJ)
            await library.snapshot("vm", "ro")
            frozen = await library.open("vm@ro")
            assert not frozen.capabilities.can_write
            with pytest.raises(BlockError) as caught:
                await frozen.write(0, b"x")
            assert caught.value.errno == Errno.EPERM
            await frozen.aclose()
            with pytest.raises(SnapshotReadOnly):
                await library.resize("vm@ro", 4 * OBJ)

    asyncio.run(main())


def test_snapshot_names_are_checked(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("vm", 2 * OBJ, object_size=OBJ)
            await library.snapshot("vm", "a")
            with pytest.raises(VolumeExists, match="vm@a"):
                await library.snapshot("vm", "a")
            with pytest.raises(VolumeNotFound):
                await library.snapshot("nothing", "a")
            with pytest.raises(VolumeNotFound):
                await library.open("vm@b")

    asyncio.run(main())


def test_a_snapshot_chain_costs_no_data_copies(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            await library.create("vm", 16 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(0, pattern(16 * OBJ, 1))
            await volume.aclose()
            before = len(await store.list())
            for n in range(10):
                await library.snapshot("vm", f"s{n}")
            assert len(await store.list()) == before + 10  # one inode each
            assert [i.spec for i in await library.list()] == ["vm"] + [
                f"vm@s{n}" for n in range(10)
            ]

    asyncio.run(main())
