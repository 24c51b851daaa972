"""A clone is a writable volume sharing a snapshot's objects until it writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ovis.volume import NotASnapshot, VolumeExists

from .helpers import OBJ, memory_library, pattern


def test_clone_starts_as_the_snapshot_and_diverges_alone(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("gold", 4 * OBJ, object_size=OBJ)
            base = await library.open("gold")
            image = pattern(4 * OBJ, 1)
            await base.write(0, image)
            await base.aclose()
            snap = await library.snapshot("gold", "v1")
            a = await library.clone("gold@v1", "vm-a")
            await library.clone("gold@v1", "vm-b")
            assert (a.parent_vid, a.shared_bytes, a.used_bytes) == (snap.vid, 4 * OBJ, 0)
            va, vb = await library.open("vm-a"), await library.open("vm-b")
            assert bytes(await va.read(0, 4 * OBJ)) == image
            await va.write(10, b"only a")
            await vb.write(OBJ * 3, b"only b")
            assert bytes(await vb.read(10, 6)) == image[10:16]
            assert bytes(await va.read(OBJ * 3, 6)) == image[OBJ * 3 : OBJ * 3 + 6]
            await va.aclose()
            await vb.aclose()
            frozen = await library.open("gold@v1")
            assert bytes(await frozen.read(0, 4 * OBJ)) == image
            await frozen.aclose()

    asyncio.run(main())


def test_clone_needs_a_snapshot_and_a_free_name(tmp_path: Path) -> None:
    async def main() -> None:
        async with memory_library(tmp_path) as library:
            await library.create("gold", OBJ, object_size=OBJ)
            await library.create("taken", OBJ, object_size=OBJ)
            with pytest.raises(NotASnapshot, match="name@tag"):
                await library.clone("gold", "new")
            await library.snapshot("gold", "v1")
            with pytest.raises(VolumeExists):
                await library.clone("gold@v1", "taken")

    asyncio.run(main())
