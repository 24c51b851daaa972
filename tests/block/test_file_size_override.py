"""A FileDevice given a size larger than its file reads zeros past the real end."""

from __future__ import annotations

import asyncio

from ovis.block import CheckedDevice, FileDevice

from .conftest import MakeImage

MiB = 1024 * 1024


def test_reads_past_the_real_end_are_zeros(make_image: MakeImage) -> None:
    path = make_image(1000, b"\x07" * 1000)

    async def scenario() -> None:
        device = CheckedDevice(FileDevice(path, size=MiB))
        assert device.size == MiB
        assert await device.read(0, 2000) == b"\x07" * 1000 + bytes(1000)
        assert await device.read(MiB - 10, 10) == bytes(10)
        await device.aclose()

    asyncio.run(scenario())


def test_writes_past_the_real_end_grow_the_file(make_image: MakeImage) -> None:
    path = make_image(1000)

    async def scenario() -> None:
        device = CheckedDevice(FileDevice(path, size=MiB))
        await device.write(MiB - 4, b"tail")
        assert await device.read(MiB - 8, 8) == bytes(4) + b"tail"
        await device.aclose()

    asyncio.run(scenario())
    assert path.stat().st_size == MiB


def test_size_defaults_to_the_file_and_can_be_smaller(make_image: MakeImage) -> None:
    path = make_image(5000)
    assert FileDevice(path).size == 5000
    assert FileDevice(path, size=4096).size == 4096
