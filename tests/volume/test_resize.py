"""Resize grows freely; shrinking past data needs force, and never leaves stale bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ovis.store import MemoryObjectStore
from ovis.volume import DataBeyondSize, InvalidVolumeArgument, VolumeInUse

from .helpers import OBJ, check_references, data_objects_of, memory_library, pattern


def test_grow_adds_zeros_and_works_while_open(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("vm", 2 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(0, pattern(2 * OBJ, 1))
            info = await library.resize("vm", 5 * OBJ + 512)
            assert info.size == volume.size == 5 * OBJ + 512
            assert bytes(await volume.read(2 * OBJ, 3 * OBJ + 512)) == bytes(3 * OBJ + 512)
            await volume.write(5 * OBJ, b"end")
            await volume.aclose()
            await library.resize("vm", 6 * OBJ)  # and while closed
            volume = await library.open("vm")
            assert bytes(await volume.read(5 * OBJ, 4)) == b"end\0"
            await volume.aclose()

    asyncio.run(main())


def test_shrink_below_data_is_refused_unless_forced(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            info = await library.create("vm", 4 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(OBJ + 1000, b"data")
            with pytest.raises(VolumeInUse):
                await library.resize("vm", OBJ)
            await volume.aclose()
            await library.resize("vm", 2 * OBJ)  # nothing written past it
            with pytest.raises(DataBeyondSize, match="force"):
                await library.resize("vm", OBJ + 512)  # cuts into the written bytes
            await library.resize("vm", OBJ + 1536)  # only zeros past it: allowed
            with pytest.raises(DataBeyondSize):
                await library.resize("vm", OBJ)
            await library.resize("vm", OBJ, force=True)
            assert await data_objects_of(store, info.vid) == []
            assert set(await store.list()) == await check_references(library)

    asyncio.run(main())


def test_forced_shrink_then_grow_shows_zeros_not_old_bytes(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("vm", 2 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(0, pattern(2 * OBJ, 2))
            await volume.aclose()
            await library.snapshot("vm", "s")  # the cut object is shared: copy-up path
            await library.resize("vm", OBJ // 2, force=True)
            await library.resize("vm", 2 * OBJ)
            volume = await library.open("vm")
            got = bytes(await volume.read(0, 2 * OBJ))
            await volume.aclose()
            assert got == pattern(2 * OBJ, 2)[: OBJ // 2] + bytes(OBJ + OBJ // 2)
            frozen = await library.open("vm@s")
            assert bytes(await frozen.read(0, 2 * OBJ)) == pattern(2 * OBJ, 2)
            await frozen.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("size", [0, -512, 1000, 1 << 60])
def test_sizes_must_be_positive_sector_multiples(tmp_path: Path, size: int) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            with pytest.raises(InvalidVolumeArgument):
                await library.create("vm", size, object_size=OBJ)
            await library.create("ok", OBJ, object_size=OBJ)
            with pytest.raises(InvalidVolumeArgument):
                await library.resize("ok", size)

    asyncio.run(main())
