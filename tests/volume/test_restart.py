"""Reopening the data directory finds every volume as it was last flushed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ovis.store import LocalObjectStore
from ovis.volume import VolumeLibrary, data_oid

from .helpers import OBJ, check_references, pattern


async def _contents(library: VolumeLibrary) -> dict[str, bytes]:
    out = {}
    for info in await library.list():
        volume = await library.open(info.spec)
        out[info.spec] = bytes(await volume.read(0, volume.size))
        await volume.aclose()
    return out


def test_clean_restart_keeps_volumes_snapshots_and_clones(tmp_path: Path) -> None:
    async def main() -> None:
        async with VolumeLibrary.local(tmp_path) as library:
            await library.create("vm", 8 * OBJ, object_size=OBJ)
            volume = await library.open("vm")
            await volume.write(OBJ // 2, pattern(3 * OBJ, 1))
            await library.snapshot("vm", "s")
            await volume.write(0, b"after the snapshot")
            await volume.aclose()
            await library.clone("vm@s", "copy")
            await library.resize("copy", 16 * OBJ)
            infos, contents = await library.list(), await _contents(library)
        async with VolumeLibrary.local(tmp_path) as library:
            assert await library.list() == infos
            assert await _contents(library) == contents
            await check_references(library)

    asyncio.run(main())


def test_killed_process_keeps_what_was_flushed(tmp_path: Path) -> None:
    async def main() -> None:
        library = VolumeLibrary.local(tmp_path)
        await library.create("vm", 8 * OBJ, object_size=OBJ)
        volume = await library.open("vm")
        await volume.write(0, pattern(2 * OBJ, 2), fua=True)
        await library.snapshot("vm", "s")
        await volume.write(OBJ, pattern(OBJ, 3))
        await volume.flush()
        await volume.write(5 * OBJ, pattern(OBJ, 4))  # unflushed: may or may not survive
        store = library._store
        assert isinstance(store, LocalObjectStore)
        store._abandon()  # kill -9: nothing more is written
        await library._catalog.aclose()

        async with VolumeLibrary.local(tmp_path) as library:
            await check_references(library)
            got = await _contents(library)
            assert got["vm"][: 2 * OBJ] == pattern(2 * OBJ, 2)[:OBJ] + pattern(OBJ, 3)
            assert got["vm"][5 * OBJ : 6 * OBJ] in (bytes(OBJ), pattern(OBJ, 4))
            assert got["vm@s"] == pattern(2 * OBJ, 2) + bytes(6 * OBJ)
            await library.gc()
            assert set(await library._store.list()) == await check_references(library)

    asyncio.run(main())


def test_versions_keep_growing_across_restarts(tmp_path: Path) -> None:
    async def main() -> None:
        seen = []
        for round_ in range(3):
            async with VolumeLibrary.local(tmp_path, fsync=False) as library:
                if round_ == 0:
                    info = await library.create("vm", OBJ, object_size=OBJ)
                volume = await library.open("vm")
                await volume.write(0, bytes([round_ + 1]))
                await volume.write(1, bytes([round_ + 1]))
                await volume.aclose()
                seen.append(await library._store.version(data_oid(info.vid, 0)))
        assert seen == sorted(seen) and len(set(seen)) == 3

    asyncio.run(main())
