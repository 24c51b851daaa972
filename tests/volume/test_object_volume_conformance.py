"""ObjectVolume passes check_block_device, writable and as a read-only snapshot."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from ovis.block import BlockDevice
from ovis.block.testing import check_block_device
from ovis.volume import VolumeLibrary

from .helpers import OBJ, KiB, memory_library, pattern

MiB = 1024 * KiB


@pytest.mark.parametrize(
    ("size", "object_size"),
    [(2 * MiB, OBJ), (2 * MiB + 512, 4 * KiB), (3 * MiB, 1 * MiB)],
    ids=["64k-objects", "4k-objects-odd-size", "1m-objects"],
)
def test_writable_volume_passes(tmp_path: Path, size: int, object_size: int) -> None:
    async def main() -> None:
        serial = itertools.count()
        async with memory_library(tmp_path) as library:

            async def factory() -> BlockDevice:
                name = f"v{next(serial)}"
                await library.create(name, size, object_size=object_size)
                return await library.open(name)

            await check_block_device(factory)

    asyncio.run(main())


def test_volume_on_local_store_passes(tmp_path: Path) -> None:
    async def main() -> None:
        serial = itertools.count()
        async with VolumeLibrary.local(tmp_path, fsync=False) as library:

            async def factory() -> BlockDevice:
                name = f"v{next(serial)}"
                await library.create(name, 2 * MiB, object_size=OBJ)
                return await library.open(name)

            await check_block_device(factory)

    asyncio.run(main())


def test_cloned_volume_passes(tmp_path: Path) -> None:
    """Every write lands on objects shared with a snapshot: the copy-up path."""

    async def main() -> None:
        serial = itertools.count()
        async with memory_library(tmp_path) as library:
            await library.create("base", 2 * MiB, object_size=OBJ)
            base = await library.open("base")
            await base.write(0, pattern(2 * MiB, 1))
            await base.aclose()
            await library.snapshot("base", "gold")

            async def factory() -> BlockDevice:
                name = f"clone{next(serial)}"
                await library.clone("base@gold", name)
                return await library.open(name)

            await check_block_device(factory)

    asyncio.run(main())


def test_snapshot_passes_read_only(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("vol", 2 * MiB, object_size=OBJ)
            volume = await library.open("vol")
            await volume.write(100 * KiB, pattern(300 * KiB, 2))
            await volume.aclose()
            await library.snapshot("vol", "ro")

            async def factory() -> BlockDevice:
                return await library.open("vol@ro")

            await check_block_device(factory, writable=False)

    asyncio.run(main())
