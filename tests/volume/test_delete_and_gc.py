"""Delete reclaims a volume's own objects; shared ones stay; gc finds leaks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ovis.store import MemoryObjectStore
from ovis.volume import VolumeInUse, VolumeNotFound, data_oid, inode_oid

from .helpers import OBJ, check_references, memory_library, pattern


def test_deleting_a_volume_removes_its_snapshots_but_not_what_clones_share(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            await library.create("base", 4 * OBJ, object_size=OBJ)
            volume = await library.open("base")
            await volume.write(0, pattern(4 * OBJ, 1))
            await library.snapshot("base", "s")
            await volume.write(0, b"later")
            await volume.aclose()
            await library.clone("base@s", "child")
            await library.delete("base")
            assert [i.spec for i in await library.list()] == ["child"]
            assert set(await store.list()) == await check_references(library)
            child = await library.open("child")
            assert bytes(await child.read(0, 4 * OBJ)) == pattern(4 * OBJ, 1)
            await child.aclose()
            await library.delete("child")
            assert await store.list() == []
            assert (await library.gc()).removed == 0

    asyncio.run(main())


def test_deleting_one_snapshot_keeps_objects_the_volume_still_uses(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            await library.create("vm", 2 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(0, pattern(2 * OBJ, 2))
            await library.snapshot("vm", "s")
            await volume.write(0, b"x")  # object 0 diverges, object 1 stays shared
            await library.delete("vm@s")
            assert bytes(await volume.read(OBJ, OBJ)) == pattern(2 * OBJ, 2)[OBJ:]
            await volume.aclose()
            assert set(await store.list()) == await check_references(library)
            assert len(await store.list()) == 3  # the inode, its object 0, the old object 1

    asyncio.run(main())


def test_open_volumes_and_snapshots_cannot_be_deleted(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("vm", OBJ, object_size=OBJ)
            await library.snapshot("vm", "s")
            frozen = await library.open("vm@s")
            with pytest.raises(VolumeInUse, match="vm@s"):
                await library.delete("vm")
            await frozen.aclose()
            volume = await library.open("vm")
            with pytest.raises(VolumeInUse):
                await library.delete("vm")
            await library.delete("vm@s")
            await volume.aclose()
            await library.delete("vm")
            with pytest.raises(VolumeNotFound):
                await library.delete("vm")

    asyncio.run(main())


def test_gc_removes_leaked_objects_and_spares_open_writers(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            info = await library.create("vm", 4 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(0, b"kept")
            await store.create_and_write(inode_oid(999), b"orphan inode", 1)
            await store.create_and_write(data_oid(999, 0), b"orphan data", 1)
            await store.create_and_write(data_oid(info.vid, 3), b"unflushed copy-up?", 1)
            await store.create_and_write(0x40 << 56, b"not ours", 1)
            report = await library.gc()
            assert report.removed == 2  # the open writer's object 3 is left alone
            await volume.aclose()
            report = await library.gc()
            assert (report.removed, report.kept) == (1, 3)
            volume = await library.open("vm")
            assert bytes(await volume.read(0, 4)) == b"kept"
            await volume.aclose()

    asyncio.run(main())
