"""A persisted cow overlay survives a reopen, and the base stays untouched byte for byte."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from ovis.block import CheckedDevice, CowFilter, FileDevice, ReadOnlyFilter

from .conftest import MakeImage
from .devices import KeepOpen

MiB = 1024 * 1024
BLOCK = 4096


def _open(base: Path, overlay: Path, block_size: int = BLOCK) -> CheckedDevice:
    return CheckedDevice(
        CowFilter(
            ReadOnlyFilter(FileDevice(base, readonly=True)),
            overlay_path=overlay,
            block_size=block_size,
        )
    )


def test_reopen_continues_and_base_is_untouched(make_image: MakeImage, tmp_path: Path) -> None:
    base = make_image(MiB, b"base" * (MiB // 4))
    original = base.read_bytes()
    overlay = tmp_path / "disk.cow"

    async def first_run() -> None:
        device = _open(base, overlay)
        await device.write(10, b"hello")
        await device.zero(2 * BLOCK, 3 * BLOCK)
        await device.write(MiB - 3, b"end")
        await device.aclose()

    async def second_run() -> None:
        device = _open(base, overlay)
        assert await device.read(8, 9) == b"bahelloeb"
        assert await device.read(2 * BLOCK, 3 * BLOCK) == bytes(3 * BLOCK)
        assert await device.read(MiB - 4, 4) == b"bend"
        await device.write(20, b"again")
        await device.aclose()

    async def third_run() -> None:
        device = _open(base, overlay)
        assert await device.read(8, 17) == b"bahelloebaseagain"
        await device.aclose()

    asyncio.run(first_run())
    assert Path(f"{overlay}.bitmap").exists()
    asyncio.run(second_run())
    asyncio.run(third_run())
    assert base.read_bytes() == original


def test_what_was_flushed_survives_a_crash(make_image: MakeImage, tmp_path: Path) -> None:
    """Copying the files after flush, before close, is what a crash would leave."""
    base = make_image(MiB)
    overlay = tmp_path / "disk.cow"
    crashed = tmp_path / "crashed.cow"

    async def run() -> None:
        device = _open(base, overlay)
        await device.write(0, b"flushed")
        await device.flush()
        shutil.copy(overlay, crashed)
        shutil.copy(f"{overlay}.bitmap", f"{crashed}.bitmap")
        await device.write(BLOCK, b"not flushed")  # the map on disk does not know it
        await device.aclose()

    async def after_crash() -> None:
        device = _open(base, crashed)
        assert await device.read(0, 7) == b"flushed"
        assert await device.read(BLOCK, 11) == bytes(11)
        await device.aclose()

    asyncio.run(run())
    asyncio.run(after_crash())


def test_fua_write_is_durable_at_once(make_image: MakeImage, tmp_path: Path) -> None:
    base = make_image(MiB)
    overlay = tmp_path / "disk.cow"
    crashed = tmp_path / "crashed.cow"

    async def run() -> None:
        device = _open(base, overlay)
        await device.write(3 * BLOCK, b"durable", fua=True)
        shutil.copy(overlay, crashed)
        shutil.copy(f"{overlay}.bitmap", f"{crashed}.bitmap")
        await device.aclose()
        reopened = _open(base, crashed)
        assert await reopened.read(3 * BLOCK, 7) == b"durable"
        await reopened.aclose()

    asyncio.run(run())


def test_data_without_a_map_is_discarded(make_image: MakeImage, tmp_path: Path) -> None:
    base = make_image(MiB, b"\x01" * MiB)
    overlay = tmp_path / "disk.cow"
    overlay.write_bytes(b"\xff" * MiB)  # as if a run crashed before its first sync

    async def run() -> None:
        device = _open(base, overlay)
        assert await device.read(0, MiB) == b"\x01" * MiB
        await device.aclose()

    asyncio.run(run())


def test_reopen_with_other_geometry_or_while_in_use_is_refused(
    make_image: MakeImage,
    tmp_path: Path,
) -> None:
    base = make_image(MiB)
    overlay = tmp_path / "disk.cow"

    async def run() -> None:
        device = _open(base, overlay)
        with pytest.raises(ValueError, match="in use"):
            _open(base, overlay)
        await device.aclose()
        with pytest.raises(ValueError, match="blocks"):
            _open(base, overlay, block_size=2 * BLOCK)
        with pytest.raises(ValueError, match="disk"):
            _open(make_image(2 * MiB), overlay)

    asyncio.run(run())


def test_refused_reopen_leaves_no_descriptor_behind(make_image: MakeImage, tmp_path: Path) -> None:
    base = FileDevice(make_image(MiB), readonly=True)
    overlay = tmp_path / "disk.cow"

    async def run() -> None:
        await CowFilter(KeepOpen(base), overlay_path=overlay, block_size=BLOCK).aclose()
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(ValueError):
            CowFilter(base, overlay_path=overlay, block_size=2 * BLOCK)
        assert len(os.listdir("/proc/self/fd")) == before
        await base.aclose()

    asyncio.run(run())
