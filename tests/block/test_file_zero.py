"""FileDevice.zero punches a hole only when allowed, and falls back without fallocate."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from ovis.block import BlockError, CheckedDevice, FileDevice, _file
from ovis.nbd._constants import Errno

from .conftest import MakeImage

MiB = 1024 * 1024


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _zero(path: Path, offset: int, length: int, **flags: bool) -> None:
    async def scenario() -> None:
        device = CheckedDevice(FileDevice(path))
        await device.zero(offset, length, **flags)
        assert await device.read(offset, length) == bytes(length)
        assert await device.read(offset - 1, 1) == b"\x01"
        assert await device.read(offset + length, 1) == b"\x01"
        await device.aclose()

    asyncio.run(scenario())


def test_zero_with_may_trim_punches_a_hole(make_image: MakeImage) -> None:
    path = make_image(MiB, b"\x01" * MiB)
    before = _allocated(path)
    _zero(path, 4096, 512 * 1024, may_trim=True)
    assert _allocated(path) <= before - 512 * 1024


def test_zero_without_may_trim_keeps_the_space_allocated(make_image: MakeImage) -> None:
    path = make_image(MiB, b"\x01" * MiB)
    before = _allocated(path)
    _zero(path, 4096, 512 * 1024)
    assert _allocated(path) == before


def test_zero_without_may_trim_on_tmpfs_keeps_the_space_allocated() -> None:
    # tmpfs has no ZERO_RANGE: the device punches and allocates again.
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no tmpfs at /dev/shm")
    path = shm / f"ovis-test-zero-{os.getpid()}.img"
    try:
        path.write_bytes(b"\x01" * MiB)
        before = _allocated(path)
        _zero(path, 4096, 512 * 1024)
        assert _allocated(path) == before
    finally:
        path.unlink()


def test_without_fallocate_zero_writes_zeros_and_fast_zero_is_refused(
    make_image: MakeImage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on a file system without fallocate: fast zero is ENOTSUP and changes nothing."""

    def unsupported(fd: int, mode: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "not on this file system")

    monkeypatch.setattr(_file, "fallocate", unsupported)
    path = make_image(MiB, b"\x01" * MiB)

    async def scenario() -> None:
        device = CheckedDevice(FileDevice(path))
        assert not device.capabilities.can_fast_zero
        assert not device.capabilities.can_trim
        assert device.capabilities.can_zero
        with pytest.raises(BlockError) as info:
            await device.zero(4096, 8192, fast=True)
        assert info.value.errno == Errno.ENOTSUP
        assert await device.read(0, MiB) == b"\x01" * MiB
        await device.zero(4096, 8192, may_trim=True)
        assert await device.read(0, 16384) == b"\x01" * 4096 + bytes(8192) + b"\x01" * 4096
        await device.aclose()

    asyncio.run(scenario())


def test_fast_zero_on_a_file_system_that_can_is_done(make_image: MakeImage) -> None:
    path = make_image(MiB, b"\x01" * MiB)

    async def scenario() -> None:
        device = CheckedDevice(FileDevice(path))
        assert device.capabilities.can_fast_zero
        await device.zero(4096, 8192, fast=True, fua=True)
        assert await device.read(4096, 8192) == bytes(8192)
        await device.aclose()

    asyncio.run(scenario())
