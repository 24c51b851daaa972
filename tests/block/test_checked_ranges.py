"""CheckedDevice refuses bad requests with the NBD errno, before the device sees them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ovis.block import BlockError, CheckedDevice, MemoryDevice, ReadOnlyFilter
from ovis.nbd._constants import Errno

from .devices import CountsCalls, WithCapabilities

SIZE = 1024 * 1024 + 1000  # not a multiple of min_block: the tail is a partial block
U = 512  # min_block
MAX = 64 * 1024  # max_block
U64 = 1 << 64

Op = Callable[[CheckedDevice], Coroutine[Any, Any, Any]]


def _device(**caps: Any) -> tuple[CheckedDevice, CountsCalls]:
    inner = CountsCalls(WithCapabilities(MemoryDevice(SIZE, min_block=U, max_block=MAX), **caps))
    return CheckedDevice(inner), inner


REFUSED: list[tuple[str, Errno, Op, dict[str, Any]]] = [
    ("negative offset", Errno.EINVAL, lambda d: d.read(-U, U), {}),
    ("negative length", Errno.EINVAL, lambda d: d.read(0, -U), {}),
    ("zero-length read", Errno.EINVAL, lambda d: d.read(0, 0), {}),
    ("zero-length write", Errno.EINVAL, lambda d: d.write(0, b""), {}),
    ("zero-length trim", Errno.EINVAL, lambda d: d.trim(0, 0), {}),
    ("zero-length zero", Errno.EINVAL, lambda d: d.zero(0, 0), {}),
    ("zero-length cache", Errno.EINVAL, lambda d: d.cache(0, 0), {}),
    ("zero-length extents", Errno.EINVAL, lambda d: d.extents(0, 0), {}),
    ("read wraps 2**64", Errno.EINVAL, lambda d: d.read(U64 - U, 2 * U), {}),
    ("read ends at 2**64", Errno.EINVAL, lambda d: d.read(U64 - U, U), {}),
    ("write wraps 2**64", Errno.EINVAL, lambda d: d.write(U64 - U, bytes(2 * U)), {}),
    ("zero wraps 2**64", Errno.EINVAL, lambda d: d.zero(U64 - U, 2 * U), {}),
    ("read past the end", Errno.EINVAL, lambda d: d.read(SIZE, U), {}),
    ("read across the end", Errno.EINVAL, lambda d: d.read(SIZE - 1000, 2 * U), {}),
    ("trim past the end", Errno.EINVAL, lambda d: d.trim(SIZE - 1000, 2 * U), {}),
    ("cache past the end", Errno.EINVAL, lambda d: d.cache(SIZE - 1000, 2 * U), {}),
    ("extents past the end", Errno.EINVAL, lambda d: d.extents(SIZE - 1000, 2 * U), {}),
    ("write past the end", Errno.ENOSPC, lambda d: d.write(SIZE - 1000, bytes(2 * U)), {}),
    ("zero past the end", Errno.ENOSPC, lambda d: d.zero(SIZE - 1000, 2 * U), {}),
    ("misaligned offset", Errno.EINVAL, lambda d: d.read(U // 2, U), {}),
    ("misaligned length", Errno.EINVAL, lambda d: d.write(0, bytes(U + 1)), {}),
    ("read over max_block", Errno.EOVERFLOW, lambda d: d.read(0, MAX + U), {}),
    ("write over max_block", Errno.EINVAL, lambda d: d.write(0, bytes(MAX + U)), {}),
    (
        "write read-only",
        Errno.EPERM,
        lambda d: d.write(0, bytes(U)),
        {"can_write": False, "can_trim": False, "can_zero": False, "can_fast_zero": False},
    ),
    (
        "write read-only, past the end",
        Errno.EPERM,
        lambda d: d.write(SIZE - 1000, bytes(2 * U)),
        {"can_write": False, "can_trim": False, "can_zero": False, "can_fast_zero": False},
    ),
    ("trim unsupported", Errno.EINVAL, lambda d: d.trim(0, U), {"can_trim": False}),
    (
        "zero unsupported",
        Errno.EINVAL,
        lambda d: d.zero(0, U),
        {"can_zero": False, "can_fast_zero": False},
    ),
    (
        "fast zero unsupported",
        Errno.ENOTSUP,
        lambda d: d.zero(0, U, fast=True),
        {"can_fast_zero": False},
    ),
    ("fua unsupported", Errno.EINVAL, lambda d: d.write(0, bytes(U), fua=True), {"can_fua": False}),
    ("flush unsupported", Errno.EINVAL, lambda d: d.flush(), {"can_flush": False}),
    ("cache unsupported", Errno.EINVAL, lambda d: d.cache(0, U), {"can_cache": False}),
]


@pytest.mark.parametrize(("what", "errno", "op", "caps"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(what: str, errno: Errno, op: Op, caps: dict[str, Any]) -> None:
    async def scenario() -> None:
        device, inner = _device(**caps)
        with pytest.raises(BlockError) as info:
            await op(device)
        assert info.value.errno == errno
        assert inner.calls == [], "a refused request must not reach the device"
        assert await device.read(0, U) == bytes(U), "and the device still works"

    asyncio.run(scenario())


ALLOWED: list[tuple[str, Op]] = [
    ("read up to the end through the partial block", lambda d: d.read(SIZE - 1000, 1000)),
    ("write up to the end through the partial block", lambda d: d.write(SIZE - 1000, bytes(1000))),
    ("trim longer than max_block", lambda d: d.trim(0, 2 * MAX)),
    ("zero longer than max_block", lambda d: d.zero(0, 2 * MAX)),
    ("cache longer than max_block", lambda d: d.cache(0, 2 * MAX)),
    ("extents longer than max_block", lambda d: d.extents(0, 2 * MAX)),
    ("read of exactly max_block", lambda d: d.read(0, MAX)),
    ("fast zero", lambda d: d.zero(0, U, fast=True)),
]


@pytest.mark.parametrize(("what", "op"), ALLOWED, ids=[a[0] for a in ALLOWED])
def test_allowed(what: str, op: Op) -> None:
    asyncio.run(op(_device()[0]))


def test_fast_zero_refused_leaves_data_unchanged() -> None:
    async def scenario() -> None:
        device, _ = _device(can_fast_zero=False)
        await device.write(0, b"\x55" * U)
        with pytest.raises(BlockError) as info:
            await device.zero(0, U, fast=True)
        assert info.value.errno == Errno.ENOTSUP
        assert await device.read(0, U) == b"\x55" * U
        await device.zero(0, U)  # and the slow way works
        assert await device.read(0, U) == bytes(U)

    asyncio.run(scenario())


def test_read_only_filter_refuses_every_write_with_eperm() -> None:
    async def scenario() -> None:
        device = CheckedDevice(ReadOnlyFilter(MemoryDevice(SIZE)))
        ops: list[Op] = [
            lambda d: d.write(0, b"x"),
            lambda d: d.trim(0, 1),
            lambda d: d.zero(0, 1, fast=True),
        ]
        for op in ops:
            with pytest.raises(BlockError) as info:
                await op(device)
            assert info.value.errno == Errno.EPERM

    asyncio.run(scenario())
