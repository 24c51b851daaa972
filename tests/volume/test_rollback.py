"""Rollback returns a volume to a snapshot and reclaims what it discarded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ovis.store import MemoryObjectStore
from ovis.volume import VolumeInUse, VolumeNotFound

from .helpers import OBJ, check_references, data_objects_of, memory_library, pattern


def test_rollback_restores_the_snapshot_and_drops_later_writes(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            await library.create("vm", 4 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(0, pattern(2 * OBJ, 1))
            await library.snapshot("vm", "good")
            await volume.write(OBJ, pattern(3 * OBJ, 2))  # copies up 1, allocates 2 and 3
            discarded = volume.inode.vid
            await volume.aclose()
            info = await library.rollback("vm", "good")
            assert info.vid != discarded and info.parent_vid == (await library.info("vm@good")).vid
            volume = await library.open("vm")
            assert bytes(await volume.read(0, 4 * OBJ)) == pattern(2 * OBJ, 1) + bytes(2 * OBJ)
            await volume.aclose()
            assert await data_objects_of(store, discarded) == []
            assert set(await store.list()) == await check_references(library)
            # The snapshot survives a rollback and can be rolled back to again.
            await library.rollback("vm", "good")

    asyncio.run(main())


def test_rollback_needs_a_closed_volume_and_an_existing_tag(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("vm", OBJ, object_size=OBJ)
            await library.snapshot("vm", "s")
            with pytest.raises(VolumeNotFound, match="vm@t"):
                await library.rollback("vm", "t")
            volume = await library.open("vm")
            with pytest.raises(VolumeInUse):
                await library.rollback("vm", "s")
            await volume.aclose()

    asyncio.run(main())
