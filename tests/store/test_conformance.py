"""Every ObjectStore passes check_object_store."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from ovis.store import LocalObjectStore, MemoryObjectStore, ObjectStore
from ovis.store.testing import check_object_store


def test_local_store_passes_the_conformance_suite(tmp_path: Path) -> None:
    serial = itertools.count()
    dirs: dict[int, Path] = {}

    async def factory() -> ObjectStore:
        path = tmp_path / f"store{next(serial)}"
        store = LocalObjectStore(path, fsync=False)
        dirs[id(store)] = path
        return store

    async def reopen(store: ObjectStore) -> ObjectStore:
        return LocalObjectStore(dirs[id(store)], fsync=False)

    asyncio.run(check_object_store(factory, reopen=reopen))


def test_local_store_with_fsync_and_a_tiny_cache_passes(tmp_path: Path) -> None:
    serial = itertools.count()

    async def factory() -> ObjectStore:
        return LocalObjectStore(tmp_path / f"store{next(serial)}", max_open=2)

    asyncio.run(check_object_store(factory))


def test_memory_store_passes_the_conformance_suite() -> None:
    async def factory() -> ObjectStore:
        return MemoryObjectStore()

    asyncio.run(check_object_store(factory))
