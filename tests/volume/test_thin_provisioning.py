"""A new volume stores nothing, reads zeros and reports holes until written."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ovis.nbd import StateFlag
from ovis.store import MemoryObjectStore
from ovis.volume import data_oid, inode_oid

from .helpers import OBJ, KiB, data_objects_of, memory_library, pattern

HOLE = StateFlag.HOLE | StateFlag.ZERO


def test_new_volume_holds_only_its_inode_and_reads_zeros(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            info = await library.create("thin", 1024 * OBJ, object_size=OBJ)
            assert await store.list() == [inode_oid(info.vid)]
            volume = await library.open("thin")
            assert bytes(await volume.read(5 * OBJ - 10, 100)) == bytes(100)
            extents = await volume.extents(0, volume.size)
            assert [(e.length, e.flags) for e in extents] == [(1024 * OBJ, HOLE)]
            assert (await library.info("thin")).used_bytes == 0
            await volume.aclose()

    asyncio.run(main())


def test_writing_allocates_exactly_the_objects_touched(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            info = await library.create("thin", 100 * OBJ, object_size=OBJ)
            volume = await library.open("thin")
            await volume.write(3 * OBJ - 10, pattern(20, 1))  # straddles objects 2 and 3
            await volume.write(50 * OBJ, pattern(OBJ, 2))
            await volume.flush()
            assert await data_objects_of(store, info.vid) == [2, 3, 50]
            extents = [(e.length, e.flags) for e in await volume.extents(0, volume.size)]
            assert extents == [
                (2 * OBJ, HOLE),
                (2 * OBJ, 0),
                (46 * OBJ, HOLE),
                (OBJ, 0),
                (49 * OBJ, HOLE),
            ]
            assert (await library.info("thin")).used_bytes == 3 * OBJ
            # A short object stays short in the store: thin inside objects too.
            assert (await store.stat(data_oid(info.vid, 3))).length < OBJ
            await volume.aclose()

    asyncio.run(main())


def test_extents_start_mid_object_and_stop_at_the_range(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("thin", 4 * OBJ, object_size=OBJ)
            volume = await library.open("thin")
            await volume.write(OBJ, b"x")
            extents = [(e.length, e.flags) for e in await volume.extents(OBJ // 2, OBJ)]
            assert extents == [(OBJ // 2, HOLE), (OBJ // 2, 0)]
            assert sum(e.length for e in await volume.extents(10, 5 * KiB)) == 5 * KiB
            await volume.aclose()

    asyncio.run(main())
