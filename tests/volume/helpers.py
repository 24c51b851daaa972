"""Shared by the volume tests: small objects, libraries on memory or disk."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from pathlib import Path

from ovis.block._device import Buffer
from ovis.store import MemoryObjectStore, ObjectStore
from ovis.volume import VolumeCatalog, VolumeLibrary, data_oid, inode_oid, parse_oid
from ovis.volume._inode import Inode

KiB = 1024
OBJ = 64 * KiB  # object size in tests: small keeps them fast


def pattern(length: int, seed: int) -> bytes:
    """Reproducible bytes with no zero byte."""
    return random.Random(seed).randbytes(length).replace(b"\0", b"\x01")


def memory_library(
    tmp_path: Path, store: ObjectStore | None = None, catalog: str = "catalog.sqlite"
) -> VolumeLibrary:
    """A library over `store` (a new MemoryObjectStore by default) and a catalog file."""
    catalog_db = VolumeCatalog(tmp_path / catalog, fsync=False)
    return VolumeLibrary(store or MemoryObjectStore(), catalog_db)


async def check_references(library: VolumeLibrary) -> set[int]:
    """Assert every catalog entry's inode and every object it names exist; return them."""
    store = library._store
    present = set(await store.list())
    named: set[int] = set()
    for entry in await library._catalog.entries():
        oid = inode_oid(entry.vid)
        assert oid in present, f"{entry.spec}: inode is missing"
        raw = await store.read(oid, 0, (await store.stat(oid)).length)
        inode = Inode.decode(raw)
        named.add(oid)
        for index, owner in enumerate(inode.owners):
            if owner:
                assert data_oid(owner, index) in present, f"{entry.spec}: object {index} missing"
                named.add(data_oid(owner, index))
    return named


async def data_objects_of(store: ObjectStore, vid: int) -> list[int]:
    """Indices of the data objects owned by `vid` in the store."""
    ids = [parse_oid(oid) for oid in await store.list()]
    return [i.index for i in ids if i.vid == vid and i.kind.name == "DATA"]


class YieldingStore(MemoryObjectStore):
    """A memory store whose calls let other tasks run, as real I/O would."""

    async def read(self, oid: int, offset: int, length: int) -> Buffer:
        await asyncio.sleep(0)
        return await super().read(oid, offset, length)

    async def write(self, oid: int, offset: int, data: Buffer, version: int) -> None:
        await asyncio.sleep(0)
        await super().write(oid, offset, data, version)

    async def create_and_write(self, oid: int, data: Buffer, version: int) -> None:
        await asyncio.sleep(0)
        await super().create_and_write(oid, data, version)

    async def sync(self, oids: Collection[int] | None = None) -> None:
        await asyncio.sleep(0)
        await super().sync(oids)
