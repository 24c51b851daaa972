"""Trim deallocates whole objects; partial trims and zeros never touch neighbours."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ovis.store import MemoryObjectStore
from ovis.volume import data_oid

from .helpers import OBJ, data_objects_of, memory_library, pattern


def test_trim_deallocates_whole_objects_after_the_inode_is_durable(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            info = await library.create("vm", 4 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(0, pattern(4 * OBJ, 1))
            await volume.flush()
            await volume.trim(OBJ - 10, 2 * OBJ + 20)  # all of 1 and 2, edges of 0 and 3
            assert await data_objects_of(store, info.vid) == [0, 1, 2, 3]  # until flushed
            await volume.flush()
            assert await data_objects_of(store, info.vid) == [0, 3]
            data = bytes(await volume.read(0, 4 * OBJ))
            assert data[: OBJ - 10] == pattern(4 * OBJ, 1)[: OBJ - 10]
            assert data[OBJ - 10 : 3 * OBJ + 10] == bytes(2 * OBJ + 20)  # owned: zeroed
            assert data[3 * OBJ + 10 :] == pattern(4 * OBJ, 1)[3 * OBJ + 10 :]
            await volume.aclose()

    asyncio.run(main())


def test_partial_trim_of_a_shared_object_copies_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            await library.create("vm", 2 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(0, pattern(2 * OBJ, 2))
            await library.snapshot("vm", "s")
            await volume.trim(100, 200, fua=True)
            assert await data_objects_of(store, volume.inode.vid) == []
            got = bytes(await volume.read(0, 400))
            assert got[:100] == pattern(2 * OBJ, 2)[:100]
            assert got[300:] == pattern(2 * OBJ, 2)[300:400]
            await volume.trim(0, OBJ)  # a whole shared object: just forgotten
            assert bytes(await volume.read(0, OBJ)) == bytes(OBJ)
            await volume.aclose()
            frozen = await library.open("vm@s")
            assert bytes(await frozen.read(0, 2 * OBJ)) == pattern(2 * OBJ, 2)
            await frozen.aclose()

    asyncio.run(main())


def test_zero_copies_up_a_shared_object_only_for_a_partial_range(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            await library.create("vm", 3 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            original = pattern(3 * OBJ, 3)
            await volume.write(0, original)
            await library.snapshot("vm", "s")
            await volume.zero(OBJ // 2, 2 * OBJ, fast=True)  # half of 0, all of 1, half of 2
            await volume.flush()
            vid = volume.inode.vid
            assert await data_objects_of(store, vid) == [0, 2]
            expected = original[: OBJ // 2] + bytes(2 * OBJ) + original[5 * OBJ // 2 :]
            assert bytes(await volume.read(0, 3 * OBJ)) == expected
            flags = [int(e.flags) for e in await volume.extents(0, 3 * OBJ)]
            assert flags == [0, 3, 0]
            assert not await store.exists(data_oid(vid, 1))
            await volume.aclose()

    asyncio.run(main())
