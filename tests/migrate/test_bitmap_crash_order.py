"""A bit reaches the bitmap file only after the data it covers is durable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ovis.migrate import PersistentBitmap

BLOCK = 4096
SIZE = 64 * BLOCK


def _persisted(path: Path) -> list[int]:
    """The bits as a crash right now would leave them (every write reached the disk)."""
    copy = path.with_suffix(".copy")
    copy.write_bytes(path.read_bytes())
    bitmap = PersistentBitmap.open(copy, block_size=BLOCK, disk_size=SIZE)
    try:
        return [i for i in range(bitmap.nbits) if bitmap[i]]
    finally:
        bitmap.close()
        copy.unlink()


def test_bits_set_during_the_data_flush_wait_for_the_next_sync(tmp_path: Path) -> None:
    path = tmp_path / "bm"

    async def main() -> None:
        bitmap = PersistentBitmap.open(path, block_size=BLOCK, disk_size=SIZE)
        bitmap.set(1)
        seen_during_flush: list[list[int]] = []

        async def flush_data() -> None:
            # The data flush covers block 1; block 2's data lands while it runs.
            seen_during_flush.append(_persisted(path))
            bitmap.set(2)
            await asyncio.sleep(0)

        await bitmap.sync(flush_data)
        assert seen_during_flush == [[]], "no bit may be written before the data flush"
        assert _persisted(path) == [1], "block 2's data was not covered by that flush"
        assert bitmap.unsynced

        async def plain_flush() -> None:
            return None

        await bitmap.sync(plain_flush)
        assert _persisted(path) == [1, 2]
        bitmap.close()

    asyncio.run(main())


def test_a_failed_data_flush_persists_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bm"

    async def main() -> None:
        bitmap = PersistentBitmap.open(path, block_size=BLOCK, disk_size=SIZE)
        bitmap.set(5, 3)

        async def failing_flush() -> None:
            raise OSError(5, "EIO")

        with pytest.raises(OSError):
            await bitmap.sync(failing_flush)
        assert _persisted(path) == []
        assert bitmap.unsynced, "the changes are kept for the next sync"

        async def good_flush() -> None:
            return None

        await bitmap.sync(good_flush)
        assert _persisted(path) == [5, 6, 7]
        bitmap.close()

    asyncio.run(main())
