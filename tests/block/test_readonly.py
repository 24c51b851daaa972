"""ReadOnlyFilter hides every way of writing, passes reads through, and never changes next."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from ovis.block import BlockError, MemoryDevice, ReadOnlyFilter
from ovis.nbd._constants import Errno


def test_capabilities_say_read_only_and_keep_the_rest() -> None:
    base = MemoryDevice(8192, min_block=512)
    caps = ReadOnlyFilter(base).capabilities
    assert (caps.can_write, caps.can_trim, caps.can_zero, caps.can_fast_zero) == (
        False,
        False,
        False,
        False,
    )
    assert caps.can_extents and caps.can_cache and caps.can_multi_conn
    assert caps.min_block == 512


def test_writes_are_refused_even_without_the_checked_wrapper() -> None:
    async def scenario() -> None:
        base = MemoryDevice(8192)
        await base.write(0, b"base")
        device = ReadOnlyFilter(base)
        ops: list[Callable[[], Awaitable[None]]] = [
            lambda: device.write(0, b"oops"),
            lambda: device.trim(0, 4),
            lambda: device.zero(0, 4),
        ]
        for op in ops:
            with pytest.raises(BlockError) as info:
                await op()
            assert info.value.errno == Errno.EPERM
        assert await device.read(0, 4) == b"base"
        assert await device.extents(0, 8192) == await base.extents(0, 8192)

    asyncio.run(scenario())
