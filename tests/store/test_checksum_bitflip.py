"""A flipped bit on disk is reported as EIO, never returned as data."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from ovis.block import BlockError
from ovis.nbd import Errno
from ovis.store import ChecksumError, LocalObjectStore
from ovis.store._format import HEADER_SIZE, SUB_BLOCK

DATA = random.Random(1).randbytes(3 * SUB_BLOCK)


def _flip(path: Path, at: int) -> None:
    with path.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))


async def _stored(data_dir: Path) -> Path:
    store = LocalObjectStore(data_dir, fsync=False)
    await store.create_and_write(42, DATA, 1)
    await store.aclose()
    return data_dir / "obj" / f"{42:016x}"


def test_flipped_data_bit_fails_reads_of_its_sub_block_only(tmp_path: Path) -> None:
    async def main() -> None:
        _flip(await _stored(tmp_path), HEADER_SIZE + SUB_BLOCK + 1234)
        store = LocalObjectStore(tmp_path, fsync=False)
        try:
            assert bytes(await store.read(42, 0, SUB_BLOCK)) == DATA[:SUB_BLOCK]
            assert bytes(await store.read(42, 2 * SUB_BLOCK, 10)) == DATA[2 * SUB_BLOCK :][:10]
            for offset, length in [(SUB_BLOCK + 1234, 1), (0, 3 * SUB_BLOCK), (SUB_BLOCK - 1, 2)]:
                with pytest.raises(BlockError) as caught:
                    await store.read(42, offset, length)
                assert caught.value.errno == Errno.EIO
                assert isinstance(caught.value, ChecksumError)
        finally:
            await store.aclose()

    asyncio.run(main())


def test_partial_write_over_corruption_fails_and_full_overwrite_heals(tmp_path: Path) -> None:
    async def main() -> None:
        _flip(await _stored(tmp_path), HEADER_SIZE + SUB_BLOCK + 7)
        store = LocalObjectStore(tmp_path, fsync=False)
        try:
            with pytest.raises(ChecksumError):  # would vouch for the bad bytes beside it
                await store.write(42, SUB_BLOCK + 100, b"x", 2)
            await store.write(42, SUB_BLOCK, bytes(SUB_BLOCK), 2)
            assert bytes(await store.read(42, SUB_BLOCK, SUB_BLOCK)) == bytes(SUB_BLOCK)
        finally:
            await store.aclose()

    asyncio.run(main())


def test_flipped_header_bit_fails_every_access(tmp_path: Path) -> None:
    async def main() -> None:
        path = await _stored(tmp_path)
        # A new object has one header slot; the other is empty, so no fallback.
        for slot_at in (0, HEADER_SIZE // 2):
            _flip(path, slot_at + 20)
        store = LocalObjectStore(tmp_path, fsync=False)
        try:
            for call in (store.stat(42), store.read(42, 0, 1), store.write(42, 0, b"x", 9)):
                with pytest.raises(ChecksumError):
                    await call
            await store.create_and_write(42, b"fresh", 9)  # a corrupt object can be replaced
            assert bytes(await store.read(42, 0, 5)) == b"fresh"
        finally:
            await store.aclose()

    asyncio.run(main())
