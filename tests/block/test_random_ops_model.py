"""Random operation sequences on MemoryDevice and CowFilter match a plain bytearray."""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ovis.block import CheckedDevice, CowFilter, MemoryDevice, ReadOnlyFilter
from ovis.block._memory import PAGE_SIZE
from ovis.nbd._constants import StateFlag

from .devices import KeepOpen

BLOCK = 4096
SIZE = PAGE_SIZE + 5 * BLOCK + 1000  # crosses a page, ends inside a block

# Offsets near block and page boundaries are where the bugs live.
_BOUNDARIES = sorted({b + d for b in range(0, SIZE, BLOCK) for d in (-1, 0, 1)} - {-1})


@st.composite
def _range(draw: st.DrawFn) -> tuple[int, int]:
    offset = draw(st.one_of(st.sampled_from(_BOUNDARIES), st.integers(0, SIZE - 1)))
    end = draw(
        st.one_of(
            st.sampled_from([b for b in _BOUNDARIES if b > offset] + [SIZE]),
            st.integers(offset + 1, SIZE),
        )
    )
    return offset, end - offset


_OPS = st.one_of(
    st.tuples(st.just("write"), _range(), st.integers(0, 2**32), st.booleans()),
    st.tuples(st.just("zero"), _range(), st.booleans()),
    st.tuples(st.just("trim"), _range()),
    st.tuples(st.just("read"), _range()),
    st.tuples(st.just("extents"), _range()),
    st.tuples(st.just("flush")),
    st.tuples(st.just("reopen")),
)


async def _check_extents(device: CheckedDevice, model: bytearray, offset: int, n: int) -> None:
    pos, end = offset, offset + n
    while pos < end:
        for extent in await device.extents(pos, end - pos):
            described = model[pos : pos + extent.length]
            if extent.flags & StateFlag.HOLE:
                assert extent.flags & StateFlag.ZERO, "these devices' holes read as zeros"
            if extent.flags & StateFlag.ZERO:
                assert described == bytes(extent.length), f"ZERO extent at {pos} holds data"
            pos += extent.length


async def _run(kind: str, ops: list[tuple[Any, ...]], tmp: Path) -> None:
    base_content = random.Random(0).randbytes(SIZE)
    base = MemoryDevice(SIZE)
    overlay = tmp / "overlay" if kind == "cow-persisted" else None

    def open_device() -> CheckedDevice:
        if kind == "memory":
            return CheckedDevice(base)
        # The base outlives each overlay that is closed and reopened over it.
        return CheckedDevice(
            CowFilter(ReadOnlyFilter(KeepOpen(base)), overlay_path=overlay, block_size=BLOCK)
        )

    if kind == "memory":
        model = bytearray(SIZE)
    else:
        await base.write(0, base_content)
        model = bytearray(base_content)
    device = open_device()
    for op in ops:
        name = op[0]
        if name == "write":
            (offset, n), seed, fua = op[1:]
            data = random.Random(seed).randbytes(n)
            await device.write(offset, data, fua=fua)
            model[offset : offset + n] = data
        elif name == "zero":
            (offset, n), may_trim = op[1:]
            await device.zero(offset, n, may_trim=may_trim)
            model[offset : offset + n] = bytes(n)
        elif name == "trim":
            offset, n = op[1]
            await device.trim(offset, n)
            after = await device.read(offset, n)
            for i in range(n):  # trimmed bytes may keep their value or read as zero
                assert after[i] in (0, model[offset + i]), f"trim changed byte {offset + i}"
            model[offset : offset + n] = after
        elif name == "read":
            offset, n = op[1]
            assert await device.read(offset, n) == model[offset : offset + n]
        elif name == "extents":
            await _check_extents(device, model, *op[1])
        elif name == "flush":
            await device.flush()
        elif name == "reopen" and kind == "cow-persisted":
            await device.aclose()
            device = open_device()
    assert await device.read(0, SIZE) == model
    if kind != "memory":
        assert await base.read(0, SIZE) == base_content, "the base was modified"
    await device.aclose()


def _check(kind: str, ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(kind, ops, Path(tmp)))


@settings(max_examples=60, deadline=None)
@given(st.lists(_OPS, max_size=25))
def test_memory_device_matches_model(ops: list[tuple[Any, ...]]) -> None:
    _check("memory", ops)


@settings(max_examples=60, deadline=None)
@given(st.lists(_OPS, max_size=25))
def test_cow_filter_matches_model(ops: list[tuple[Any, ...]]) -> None:
    _check("cow", ops)


@settings(max_examples=40, deadline=None)
@given(st.lists(_OPS, max_size=25))
def test_persisted_cow_filter_matches_model_across_reopens(ops: list[tuple[Any, ...]]) -> None:
    _check("cow-persisted", ops)
