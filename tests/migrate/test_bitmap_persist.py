"""PersistentBitmap keeps its bits across reopen and refuses a bitmap for another disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ovis.migrate import PersistentBitmap

BLOCK = 64 * 1024
SIZE = 100 * BLOCK + 123  # a short last block


async def _no_data() -> None:
    return None


def test_bits_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "bm"
    bitmap = PersistentBitmap.open(path, block_size=BLOCK, disk_size=SIZE, tag=b"src")
    assert bitmap.nbits == 101 and bitmap.count == 0
    bitmap.set(3, 5)
    bitmap.set(100)
    assert bitmap.unsynced
    asyncio.run(bitmap.sync(_no_data))
    assert not bitmap.unsynced
    bitmap.set(50)  # never synced: lost, which is allowed
    bitmap.close()
    again = PersistentBitmap.open(path, block_size=BLOCK, disk_size=SIZE, tag=b"src")
    assert [i for i in range(again.nbits) if again[i]] == [3, 4, 5, 6, 7, 100]
    assert again.count == 6
    again.close()


@pytest.mark.parametrize(
    "changes",
    [{"block_size": 2 * BLOCK}, {"disk_size": SIZE + BLOCK}, {"tag": b"another"}],
)
def test_bitmap_for_another_disk_is_refused(tmp_path: Path, changes: dict[str, object]) -> None:
    path = tmp_path / "bm"
    PersistentBitmap.open(path, block_size=BLOCK, disk_size=SIZE, tag=b"src").close()
    args: dict[str, object] = {"block_size": BLOCK, "disk_size": SIZE, "tag": b"src"} | changes
    with pytest.raises(ValueError, match="not this one"):
        PersistentBitmap.open(path, **args)  # type: ignore[arg-type]


def test_not_a_bitmap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bm"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(ValueError, match="not an ovis bitmap"):
        PersistentBitmap.open(path, block_size=BLOCK, disk_size=SIZE)


def test_one_user_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "bm"
    first = PersistentBitmap.open(path, block_size=BLOCK, disk_size=SIZE)
    with pytest.raises(ValueError, match="in use"):
        PersistentBitmap.open(path, block_size=BLOCK, disk_size=SIZE)
    first.close()
    PersistentBitmap.open(path, block_size=BLOCK, disk_size=SIZE).close()
