"""The first write to a shared object copies it up; the snapshot never changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ovis.store import MemoryObjectStore

from .helpers import OBJ, data_objects_of, memory_library, pattern


def test_partial_write_copies_the_object_up_and_keeps_its_other_bytes(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            await library.create("vol", 4 * OBJ, object_size=OBJ)
            volume = await library.open("vol")
            original = pattern(4 * OBJ, 1)
            await volume.write(0, original)
            snap = await library.snapshot("vol", "before")
            await volume.write(OBJ + 100, b"new")
            await volume.flush()
            expected = bytearray(original)
            expected[OBJ + 100 : OBJ + 103] = b"new"
            assert bytes(await volume.read(0, 4 * OBJ)) == expected
            assert await data_objects_of(store, volume.inode.vid) == [1]  # only one copied
            assert await data_objects_of(store, snap.vid) == [0, 1, 2, 3]
            frozen = await library.open("vol@before")
            assert bytes(await frozen.read(0, 4 * OBJ)) == original
            await frozen.aclose()
            info = await library.info("vol")
            assert (info.used_bytes, info.shared_bytes) == (OBJ, 3 * OBJ)
            await volume.aclose()

    asyncio.run(main())


def test_concurrent_writes_to_one_shared_object_copy_it_up_once(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            await library.create("vol", 2 * OBJ, object_size=OBJ)
            volume = await library.open("vol")
            await volume.write(0, pattern(2 * OBJ, 2))
            await library.snapshot("vol", "s")
            creates = 0
            real_create = store.create_and_write

            async def counting_create(oid: int, data: object, version: int) -> None:
                nonlocal creates
                creates += 1
                await asyncio.sleep(0)  # let the other writers pile up behind the copy-up
                await real_create(oid, data, version)  # type: ignore[arg-type]

            store.create_and_write = counting_create  # type: ignore[method-assign]
            pieces = {n * 1000: pattern(10, 100 + n) for n in range(40)}
            await asyncio.gather(*(volume.write(at, data) for at, data in pieces.items()))
            store.create_and_write = real_create  # type: ignore[method-assign]
            assert creates == 1
            for at, data in pieces.items():
                assert bytes(await volume.read(at, 10)) == data, f"write at {at} was lost"
            await volume.aclose()

    asyncio.run(main())


def test_whole_object_write_needs_no_read_of_the_old_object(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryObjectStore()
        async with memory_library(tmp_path, store) as library:
            await library.create("vol", 2 * OBJ, object_size=OBJ)
            volume = await library.open("vol")
            await volume.write(0, pattern(2 * OBJ, 3))
            await library.snapshot("vol", "s")
            reads = 0
            real_read = store.read

            async def counting_read(oid: int, offset: int, length: int) -> bytes:
                nonlocal reads
                reads += 1
                return bytes(await real_read(oid, offset, length))

            store.read = counting_read  # type: ignore[method-assign]
            await volume.write(OBJ, pattern(OBJ, 4))
            store.read = real_read  # type: ignore[method-assign]
            assert reads == 0
            assert bytes(await volume.read(OBJ, OBJ)) == pattern(OBJ, 4)
            await volume.aclose()

    asyncio.run(main())
