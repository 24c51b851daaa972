"""Every leaf and filter stack passes check_block_device."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.block import (
    BlockDevice,
    CowFilter,
    DelayFilter,
    ErrorFilter,
    FileDevice,
    MemoryDevice,
    ReadOnlyFilter,
)
from ovis.block.testing import check_block_device

from .conftest import MakeImage

MiB = 1024 * 1024
_serial = itertools.count()
Stack = Callable[[MakeImage], BlockDevice]

WRITABLE: dict[str, Stack] = {
    "memory": lambda img: MemoryDevice(2 * MiB),
    "memory-min-block-512": lambda img: MemoryDevice(2 * MiB + 512, min_block=512),
    # The largest min_block, and a size that ends inside a block.
    "memory-min-block-64k-odd-size": lambda img: MemoryDevice(
        2 * MiB + 1000, min_block=65536, preferred_block=65536
    ),
    "cow(memory-min-block-64k)": lambda img: CowFilter(
        MemoryDevice(2 * MiB, min_block=65536, preferred_block=65536)
    ),
    "file": lambda img: FileDevice(img(2 * MiB)),
    # nbd-server's size argument: a short file served as a larger disk.
    "file-larger-than-image": lambda img: FileDevice(img(5000, b"x" * 5000), size=2 * MiB),
    "file-on-tmpfs": lambda img: _tmpfs_device(),
    "cow(file)": lambda img: CowFilter(FileDevice(img(2 * MiB))),
    "cow(readonly(file))": lambda img: CowFilter(
        ReadOnlyFilter(FileDevice(img(2 * MiB, b"base" * 4096), readonly=True))
    ),
    "cow(file)-persisted": lambda img: CowFilter(
        FileDevice(img(2 * MiB)), overlay_path=img(0).with_suffix(".overlay")
    ),
    "cow(memory)-odd-size-4k-blocks": lambda img: CowFilter(
        MemoryDevice(2 * MiB + 1000), block_size=4096
    ),
    # A slow base interleaves concurrent read-modify-writes of one block.
    "cow(delay(memory))": lambda img: CowFilter(
        DelayFilter(MemoryDevice(2 * MiB), delay_s=0.001, ops={"read"})
    ),
    "delay(error(memory))-passing": lambda img: DelayFilter(
        ErrorFilter(MemoryDevice(2 * MiB), rate=0.0), delay_s=0.0
    ),
}

READ_ONLY: dict[str, Stack] = {
    "file-opened-readonly": lambda img: FileDevice(img(2 * MiB), readonly=True),
    "readonly(file)": lambda img: ReadOnlyFilter(FileDevice(img(2 * MiB, b"\1" * 4096))),
    "readonly(memory)": lambda img: ReadOnlyFilter(MemoryDevice(2 * MiB)),
}


def _tmpfs_device() -> FileDevice:
    # tmpfs punches holes but has no FALLOC_FL_ZERO_RANGE: another zero path.
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no tmpfs at /dev/shm")
    path = shm / f"ovis-test-{os.getpid()}-{next(_serial)}.img"
    with path.open("wb") as f:
        f.truncate(2 * MiB)
    try:
        return FileDevice(path)
    finally:
        path.unlink()  # the open descriptor keeps the file alive


def _run(stack: Stack, make_image: MakeImage, writable: bool) -> None:
    async def factory() -> BlockDevice:
        return stack(make_image)

    asyncio.run(check_block_device(factory, writable=writable))


@pytest.mark.parametrize("name", WRITABLE)
def test_writable_stack_conforms(name: str, make_image: MakeImage) -> None:
    _run(WRITABLE[name], make_image, writable=True)


@pytest.mark.parametrize("name", READ_ONLY)
def test_read_only_stack_conforms(name: str, make_image: MakeImage) -> None:
    _run(READ_ONLY[name], make_image, writable=False)
