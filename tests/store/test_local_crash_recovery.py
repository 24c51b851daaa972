"""After a crash, LocalObjectStore trusts the data of objects it was writing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ovis.store import LocalObjectStore, StoreInUse
from ovis.store._format import HEADER_SIZE, HEADER_SLOT, SUB_BLOCK


def _path(data_dir: Path, oid: int) -> Path:
    return data_dir / "obj" / f"{oid:016x}"


def test_unsynced_data_without_its_checksums_is_adopted_not_eio(tmp_path: Path) -> None:
    async def main() -> None:
        store = LocalObjectStore(tmp_path)
        await store.create_and_write(1, b"a" * SUB_BLOCK, 1)
        await store.write(1, 0, b"b" * 100, 2)
        await store.sync()
        store._abandon()
        # The page cache wrote newer data, the header with its CRCs never followed.
        with _path(tmp_path, 1).open("r+b") as f:
            f.seek(HEADER_SIZE + 50)
            f.write(b"c" * 100)
        store = LocalObjectStore(tmp_path)
        try:
            expected = b"b" * 50 + b"c" * 100 + b"a" * (SUB_BLOCK - 150)
            assert bytes(await store.read(1, 0, SUB_BLOCK)) == expected
            assert await store.version(1) == 2
        finally:
            await store.aclose()
        store = LocalObjectStore(tmp_path)  # closed cleanly: checksums count again
        try:
            assert bytes(await store.read(1, 0, SUB_BLOCK)) == expected
        finally:
            await store.aclose()

    asyncio.run(main())


def test_torn_newest_header_falls_back_to_the_previous_slot(tmp_path: Path) -> None:
    async def main() -> None:
        store = LocalObjectStore(tmp_path)
        await store.create_and_write(1, b"x" * 1000, 1)
        await store.write(1, 10, b"y", 2)
        await store.aclose()
        with _path(tmp_path, 1).open("r+b") as f:
            raw = f.read(HEADER_SIZE)
            seqs = [int.from_bytes(raw[at + 8 : at + 16], "little") for at in (0, HEADER_SLOT)]
            newest = 0 if seqs[0] > seqs[1] else HEADER_SLOT
            f.seek(newest + 100)
            f.write(b"torn")
        store = LocalObjectStore(tmp_path)
        try:
            assert bytes(await store.read(1, 0, 12)) == b"x" * 10 + b"yx"
        finally:
            await store.aclose()

    asyncio.run(main())


def test_second_store_on_one_directory_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        store = LocalObjectStore(tmp_path)
        try:
            with pytest.raises(StoreInUse):
                LocalObjectStore(tmp_path)
        finally:
            await store.aclose()
        await LocalObjectStore(tmp_path).aclose()

    asyncio.run(main())


def test_interrupted_creations_are_cleaned_up_on_open(tmp_path: Path) -> None:
    async def main() -> None:
        await LocalObjectStore(tmp_path).aclose()
        leftover = tmp_path / "obj" / f"{5:016x}.0.tmp"
        leftover.write_bytes(b"half")
        store = LocalObjectStore(tmp_path)
        try:
            assert not leftover.exists()
            assert await store.list() == []
        finally:
            await store.aclose()

    asyncio.run(main())


def test_eviction_keeps_data_and_closes_descriptors(tmp_path: Path) -> None:
    async def main() -> None:
        before = len(os.listdir("/proc/self/fd"))
        store = LocalObjectStore(tmp_path, fsync=False, max_open=3)
        for oid in range(20):
            await store.create_and_write(oid, b"", 1)
            await store.write(oid, 5, oid.to_bytes(2, "little"), 2)
        assert len(os.listdir("/proc/self/fd")) - before <= 3 + 2
        for oid in range(20):
            assert bytes(await store.read(oid, 5, 2)) == oid.to_bytes(2, "little")
        await store.aclose()
        assert len(os.listdir("/proc/self/fd")) == before

    asyncio.run(main())
