"""FileDevice reports a sparse file's holes exactly, from the real SEEK_DATA/SEEK_HOLE."""

from __future__ import annotations

import asyncio
import os

from ovis.block import CheckedDevice, Extent, FileDevice
from ovis.nbd._constants import StateFlag

from .conftest import MakeImage

HOLE_ZERO = StateFlag.HOLE | StateFlag.ZERO
MiB = 1024 * 1024


def _extents(device: FileDevice, offset: int, length: int) -> list[Extent]:
    async def walk() -> list[Extent]:
        checked = CheckedDevice(device)
        out: list[Extent] = []
        pos = offset
        while pos < offset + length:  # the device may answer in parts
            for extent in await checked.extents(pos, offset + length - pos):
                out.append(extent)
                pos += extent.length
        await checked.aclose()
        return out

    return _merge(asyncio.run(walk()))


def _merge(extents: list[Extent]) -> list[Extent]:
    out: list[Extent] = []
    for e in extents:
        if out and out[-1].flags == e.flags:
            out[-1] = Extent(out[-1].length + e.length, e.flags)
        else:
            out.append(e)
    return out


def test_sparse_file_holes_are_reported_exactly(make_image: MakeImage) -> None:
    path = make_image(4 * MiB)
    with path.open("r+b") as f:
        for at in (0, MiB, 3 * MiB - 4096):
            f.seek(at)
            f.write(b"\x01" * 4096)
        os.fsync(f.fileno())
    assert _extents(FileDevice(path), 0, 4 * MiB) == [
        Extent(4096),
        Extent(MiB - 4096, HOLE_ZERO),
        Extent(4096),
        Extent(2 * MiB - 8192, HOLE_ZERO),
        Extent(4096),
        Extent(MiB, HOLE_ZERO),
    ]


def test_extents_start_at_the_offset_asked(make_image: MakeImage) -> None:
    path = make_image(MiB, b"\x01" * 8192, at=65536)
    device = FileDevice(path)
    assert _extents(device, 65536 + 100, 10000) == [
        Extent(8192 - 100),
        Extent(10000 - 8092, HOLE_ZERO),
    ]


def test_empty_image_is_one_hole(make_image: MakeImage) -> None:
    assert _extents(FileDevice(make_image(2 * MiB)), 0, 2 * MiB) == [Extent(2 * MiB, HOLE_ZERO)]


def test_space_past_the_real_end_of_a_short_file_is_a_hole(make_image: MakeImage) -> None:
    path = make_image(8192, b"\x01" * 8192)
    assert _extents(FileDevice(path, size=MiB), 0, MiB) == [
        Extent(8192),
        Extent(MiB - 8192, HOLE_ZERO),
    ]


def test_trim_punches_a_hole_that_extents_then_report(make_image: MakeImage) -> None:
    path = make_image(MiB, b"\x01" * MiB)

    async def scenario() -> None:
        device = CheckedDevice(FileDevice(path))
        await device.trim(65536, 131072)
        assert await device.read(65536, 131072) == bytes(131072)
        await device.aclose()

    asyncio.run(scenario())
    assert _extents(FileDevice(path), 0, MiB) == [
        Extent(65536),
        Extent(131072, HOLE_ZERO),
        Extent(MiB - 196608),
    ]
