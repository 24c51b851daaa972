"""After aclose every operation is ESHUTDOWN, and aclose closes once, even if it fails."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ovis.block import BlockError, CheckedDevice, MemoryDevice
from ovis.nbd._constants import Errno

from .devices import CountsCalls, RaisesOSError

Op = Callable[[CheckedDevice], Awaitable[Any]]
OPS: list[Op] = [
    lambda d: d.read(0, 1),
    lambda d: d.write(0, b"x"),
    lambda d: d.flush(),
    lambda d: d.trim(0, 1),
    lambda d: d.zero(0, 1),
    lambda d: d.cache(0, 1),
    lambda d: d.extents(0, 1),
    # Even a request that is bad in other ways: the shutdown comes first.
    lambda d: d.read(-1, 0),
]


@pytest.mark.parametrize("op", OPS)
def test_operations_after_close_are_eshutdown(op: Op) -> None:
    async def scenario() -> None:
        device = CheckedDevice(MemoryDevice(4096))
        await device.aclose()
        with pytest.raises(BlockError) as info:
            await op(device)
        assert info.value.errno == Errno.ESHUTDOWN

    asyncio.run(scenario())


def test_aclose_is_idempotent_and_closes_the_device_once() -> None:
    async def scenario() -> list[str]:
        inner = CountsCalls(MemoryDevice(4096))
        device = CheckedDevice(inner)
        await device.aclose()
        await device.aclose()
        return inner.calls

    assert asyncio.run(scenario()) == ["aclose"]


def test_aclose_that_fails_still_closes() -> None:
    async def scenario() -> None:
        device = CheckedDevice(RaisesOSError(MemoryDevice(4096), OSError(errno.EIO, "boom")))
        with pytest.raises(BlockError) as info:
            await device.aclose()
        assert info.value.errno == Errno.EIO
        await device.aclose()  # no second attempt, no error
        with pytest.raises(BlockError) as info:
            await device.read(0, 1)
        assert info.value.errno == Errno.ESHUTDOWN

    asyncio.run(scenario())
