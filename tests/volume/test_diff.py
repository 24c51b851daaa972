"""diff reports what changed between a snapshot and a later state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ovis.volume import ChangedExtent, InvalidVolumeArgument

from .helpers import OBJ, KiB, memory_library, pattern


def test_diff_finds_changed_objects_and_refines_them(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("vm", 8 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(0, pattern(4 * OBJ, 1))
            await library.snapshot("vm", "mon")
            await volume.write(OBJ + 5 * KiB, b"changed")  # object 1, one 4 KiB chunk
            same = pattern(4 * OBJ, 1)[2 * OBJ : 2 * OBJ + 10]
            await volume.write(2 * OBJ, same)  # copied up, but with equal bytes
            await volume.trim(3 * OBJ, OBJ)  # deallocated
            await volume.write(6 * OBJ, b"new")  # newly allocated
            await library.snapshot("vm", "tue")
            await volume.write(7 * OBJ, b"live")
            coarse = await library.diff("vm@mon", "vm@tue")
            assert coarse == [
                ChangedExtent(OBJ, 2 * OBJ, False),
                ChangedExtent(3 * OBJ, OBJ, True),
                ChangedExtent(6 * OBJ, OBJ, False),
            ]
            fine = await library.diff("vm@mon", "vm@tue", granularity=4 * KiB)
            assert fine == [
                ChangedExtent(OBJ + 4 * KiB, 4 * KiB, False),
                ChangedExtent(3 * OBJ, OBJ, True),
                ChangedExtent(6 * OBJ, 4 * KiB, False),
            ]
            live = await library.diff("vm@tue", "vm")  # against the open volume
            assert live == [ChangedExtent(7 * OBJ, OBJ, False)]
            assert await library.diff("vm@tue", "vm@tue") == []
            with pytest.raises(InvalidVolumeArgument):
                await library.diff("vm@mon", "vm", granularity=3000)
            await volume.aclose()

    asyncio.run(main())


def test_diff_after_growing_reports_only_written_new_space(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("vm", 2 * OBJ, object_size=OBJ)
            await library.snapshot("vm", "small")
            await library.resize("vm", 6 * OBJ)
            volume = await library.open("vm")
            await volume.write(5 * OBJ + 1, b"x")
            await volume.aclose()
            assert await library.diff("vm@small", "vm") == [ChangedExtent(5 * OBJ, OBJ, False)]

    asyncio.run(main())
