"""FileDevice opens images and block devices only, read-only when asked, and closes once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ovis.block import BlockError, CheckedDevice, FileDevice
from ovis.nbd._constants import Errno

from .conftest import MakeImage


def test_missing_image_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileDevice(tmp_path / "missing.img")


def test_not_a_file_nor_a_block_device(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither"):
        FileDevice(tmp_path, readonly=True)
    with pytest.raises(ValueError, match="neither"):
        FileDevice("/dev/null")


def test_read_only_image_cannot_be_written_even_below_the_checks(make_image: MakeImage) -> None:
    path = make_image(4096, b"keep")

    async def scenario() -> None:
        raw = FileDevice(path, readonly=True)
        assert not raw.capabilities.can_write
        with pytest.raises(BlockError) as info:
            await CheckedDevice(raw).write(0, b"oops")  # refused by the checks: EPERM
        assert info.value.errno == Errno.EPERM
        with pytest.raises(OSError):  # and the descriptor itself is read-only
            await raw.write(0, b"oops")
        await raw.aclose()

    asyncio.run(scenario())
    assert path.read_bytes()[:4] == b"keep"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_aclose_closes_the_descriptor_once(make_image: MakeImage) -> None:
    path = make_image(4096)

    async def scenario() -> None:
        before = _open_fds()
        device = FileDevice(path)
        assert _open_fds() == before + 1
        await device.aclose()
        assert _open_fds() == before
        await device.aclose()

    asyncio.run(scenario())


def test_failed_open_leaves_no_descriptor_behind() -> None:
    before = _open_fds()
    with pytest.raises(ValueError):
        FileDevice("/dev/null")
    assert _open_fds() == before
