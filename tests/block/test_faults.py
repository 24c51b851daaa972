"""ErrorFilter fails exactly the chosen operations; DelayFilter slows exactly those."""

from __future__ import annotations

import asyncio
import time

import pytest

from ovis.block import BlockError, CheckedDevice, DelayFilter, ErrorFilter, MemoryDevice
from ovis.nbd._constants import Errno


def test_error_filter_fails_chosen_ops_before_they_reach_the_device() -> None:
    async def scenario() -> None:
        memory = MemoryDevice(8192)
        device = CheckedDevice(ErrorFilter(memory, errno=Errno.ENOSPC, ops={"write", "zero"}))
        with pytest.raises(BlockError) as info:
            await device.write(0, b"lost")
        assert info.value.errno == Errno.ENOSPC
        with pytest.raises(BlockError):
            await device.zero(0, 10)
        assert await device.read(0, 4) == bytes(4)  # reads pass, and the write did nothing
        await device.trim(0, 10)
        await device.flush()

    asyncio.run(scenario())


def test_error_filter_defaults_to_eio_on_everything() -> None:
    async def scenario() -> None:
        device = ErrorFilter(MemoryDevice(8192))
        for op in (lambda: device.read(0, 1), device.flush, lambda: device.extents(0, 1)):
            with pytest.raises(BlockError) as info:
                await op()
            assert info.value.errno == Errno.EIO

    asyncio.run(scenario())


def _failures(rate: float, seed: int | None) -> list[bool]:
    async def scenario() -> list[bool]:
        device = ErrorFilter(MemoryDevice(8192), ops={"read"}, rate=rate, seed=seed)
        out = []
        for _ in range(200):
            try:
                await device.read(0, 1)
            except BlockError:
                out.append(True)
            else:
                out.append(False)
        return out

    return asyncio.run(scenario())


def test_error_rate_is_honoured_and_repeatable_with_a_seed() -> None:
    assert not any(_failures(0.0, None))
    assert all(_failures(1.0, None))
    first = _failures(0.3, seed=42)
    assert first == _failures(0.3, seed=42)
    assert 30 < sum(first) < 90


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown operations"):
        ErrorFilter(MemoryDevice(1), ops={"reed"})
    with pytest.raises(ValueError, match="rate"):
        ErrorFilter(MemoryDevice(1), rate=1.5)
    with pytest.raises(ValueError, match="non-zero"):
        ErrorFilter(MemoryDevice(1), errno=Errno.OK)
    with pytest.raises(ValueError, match="negative"):
        DelayFilter(MemoryDevice(1), delay_s=-1)


def test_delay_filter_delays_only_the_chosen_ops_without_blocking_the_loop() -> None:
    async def scenario() -> None:
        device = DelayFilter(MemoryDevice(8192), delay_s=0.05, ops={"write"})
        started = time.monotonic()
        await device.read(0, 1)
        assert time.monotonic() - started < 0.04
        started = time.monotonic()
        # Three slow writes at once take one delay, not three: the loop is free.
        await asyncio.gather(*(device.write(i, b"x") for i in range(3)))
        elapsed = time.monotonic() - started
        assert 0.05 <= elapsed < 0.14
        assert await device.read(0, 3) == b"xxx"

    asyncio.run(scenario())
