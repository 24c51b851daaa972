"""check_block_device: the conformance suite every BlockDevice must pass.

Why ship it with the interface: as trio.testing.check_one_way_stream does for
streams, one suite run against every leaf and every filter stack keeps them
interchangeable, and a new device gets the whole of the contract in
_device.py (and the NBD spec's points most often gotten wrong) tested by
writing one factory.

`factory` is an async callable returning a fresh device of at least 1 MiB;
the suite wraps each one in `CheckedDevice` itself, as the server does, uses
it for one check and closes it.  Offsets and lengths are multiples of the
device's `min_block`.  The device may hold any data to start with: each check
reads what is there and compares against that.  A failure raises
AssertionError saying which request did what.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from ovis.block._checked import CheckedDevice
from ovis.block._device import BlockDevice, BlockError, Buffer, MiB
from ovis.nbd._constants import Errno, StateFlag

Factory = Callable[[], Awaitable[BlockDevice]]
_Operation = Callable[[], Awaitable[object]]
_Check = Callable[[CheckedDevice], Awaitable[None]]
_U64_LIMIT = 1 << 64


async def check_block_device(factory: Factory, *, writable: bool = True) -> None:
    """Run every check on a fresh device from `factory`; raise AssertionError on failure."""
    checks: list[_Check] = [_check_geometry, _check_bad_requests, _check_extents]
    if writable:
        checks += [
            _check_read_after_write,
            _check_concurrent_writes,
            _check_fua_and_flush,
            _check_zero,
            _check_fast_zero,
            _check_trim,
            _check_bad_writes,
        ]
    else:
        checks.append(_check_read_only)
    checks.append(_check_close)
    for check in checks:
        device = CheckedDevice(await factory())
        try:
            if device.capabilities.can_write != writable:
                raise AssertionError(
                    f"device has can_write={device.capabilities.can_write}, "
                    f"but the suite was run with writable={writable}"
                )
            await check(device)
        finally:
            await device.aclose()


# -- helpers ---------------------------------------------------------------


def _pattern(length: int, seed: int) -> bytes:
    """Reproducible bytes with no zero byte, so they can never pass for zeros."""
    return random.Random(seed).randbytes(length).replace(b"\0", b"\x01")


def _unit(device: CheckedDevice) -> int:
    return device.capabilities.min_block


def _down(device: CheckedDevice, n: int) -> int:
    return n // _unit(device) * _unit(device)


def _pad(device: CheckedDevice) -> int:
    """A small length every device accepts: 4 KiB, or min_block if larger."""
    return max(4096, _unit(device))


def _fit(device: CheckedDevice, offset: int, length: int, end: int = -1) -> tuple[int, int]:
    """The range wished for, aligned to min_block and kept below `end` (the size)."""
    end = device.size if end < 0 else end
    offset = max(0, min(_down(device, offset), _down(device, end - 1)))
    return offset, min(max(_unit(device), _down(device, length)), end - offset)


async def _read_all(device: CheckedDevice, offset: int, length: int) -> bytearray:
    chunk = _down(device, min(device.capabilities.max_block, MiB))
    out = bytearray()
    for pos in range(offset, offset + length, chunk):
        n = min(chunk, offset + length - pos)
        data = await device.read(pos, n)
        if len(data) != n:
            raise AssertionError(f"read({pos}, {n}) returned {len(data)} bytes")
        out += data
    return out


def _assert_same(actual: Buffer, expected: Buffer, base: int, what: str) -> None:
    if actual == expected:
        return
    at = next(i for i, (a, b) in enumerate(zip(actual, expected, strict=True)) if a != b)
    raise AssertionError(
        f"after {what}: byte at offset {base + at} is {actual[at]:#04x}, "
        f"expected {expected[at]:#04x}"
    )


async def _expect_errno(
    expected: Errno,
    what: str,
    operation: _Operation,
) -> None:
    try:
        await operation()
    except BlockError as exc:
        if exc.errno != expected:
            raise AssertionError(
                f"{what}: expected {expected.name}, got {Errno(exc.errno).name}"
            ) from exc
        return
    raise AssertionError(f"{what}: expected BlockError({expected.name}), but it succeeded")


async def _fill(device: CheckedDevice, offset: int, length: int, seed: int) -> bytes:
    data = _pattern(length, seed)
    chunk = _down(device, min(device.capabilities.max_block, MiB))
    for pos in range(0, length, chunk):
        await device.write(offset + pos, data[pos : pos + chunk])
    return data


# -- checks ----------------------------------------------------------------


async def _check_geometry(device: CheckedDevice) -> None:
    if device.size < MiB:
        raise AssertionError(f"the suite needs a device of at least 1 MiB, not {device.size}")
    await _read_all(device, 0, MiB)
    await _read_all(device, *_fit(device, device.size - 5000, 5000))


async def _check_read_after_write(device: CheckedDevice) -> None:
    u, size, pad = _unit(device), device.size, _pad(device)
    cases = [
        (0, 4096),  # aligned
        (4096 + 5 * u, 1000),  # unaligned, as far as min_block allows
        (65536 - 8 * u, 4096 + 16 * u),  # across a 64 KiB page boundary
        (131072 + u, 300_000),  # many pages
        (size - 3000, 3000),  # up to the end
    ]
    for seed, wished in enumerate(cases):
        offset, length = _fit(device, *wished)
        lo, hi = max(0, offset - pad), min(size, offset + length + pad)
        expected = await _read_all(device, lo, hi - lo)
        data = _pattern(length, seed)
        await device.write(offset, data)
        expected[offset - lo : offset - lo + length] = data
        what = f"write({offset}, {length} bytes)"
        _assert_same(await _read_all(device, lo, hi - lo), expected, lo, what)
    # An overwrite inside earlier data replaces exactly its own bytes.
    region = max(2 * pad, 4 * u)
    expected = await _read_all(device, 0, region)
    data = _pattern(2 * u, 99)
    await device.write(2 * u, data)
    expected[2 * u : 4 * u] = data
    _assert_same(await _read_all(device, 0, region), expected, 0, f"overwrite at {2 * u}")


async def _check_concurrent_writes(device: CheckedDevice) -> None:
    # Pipelined writes to neighbouring bytes: a read-modify-write that is not
    # serialised loses all but one of them.
    piece = max(_unit(device), 512)
    pieces = [_pattern(piece, 100 + i) for i in range(16)]
    await asyncio.gather(*(device.write(i * piece, p) for i, p in enumerate(pieces)))
    expected = b"".join(pieces)
    _assert_same(await _read_all(device, 0, len(expected)), expected, 0, "concurrent writes")


async def _check_fua_and_flush(device: CheckedDevice) -> None:
    caps = device.capabilities
    offset, length = _fit(device, 4096, 8192)
    data = _pattern(length, 7)
    await device.write(offset, data, fua=caps.can_fua)
    _assert_same(await _read_all(device, offset, length), data, offset, "write(fua=True)")
    if caps.can_flush:
        await device.flush()
        _assert_same(await _read_all(device, offset, length), data, offset, "flush")


async def _check_zero(device: CheckedDevice) -> None:
    if not device.capabilities.can_zero:
        return
    u = _unit(device)
    lo, length = _fit(device, 60 * 1024, 200 * 1024)
    expected = bytearray(await _fill(device, lo, length, 11))
    for wished, may_trim in [
        ((lo + 3 * u, 5000), False),  # unaligned, inside one page
        ((lo + 8192 + u, 150 * 1024), True),  # unaligned, across pages, may punch
        ((lo + 4096, 4096), False),  # aligned
    ]:
        offset, n = _fit(device, *wished, end=lo + length)
        await device.zero(offset, n, may_trim=may_trim)
        expected[offset - lo : offset - lo + n] = bytes(n)
        what = f"zero({offset}, {n}, may_trim={may_trim})"
        _assert_same(await _read_all(device, lo, length), expected, lo, what)


async def _check_fast_zero(device: CheckedDevice) -> None:
    if not device.capabilities.can_zero:
        return
    offset, length = _fit(device, 256 * 1024, 128 * 1024)
    data = await _fill(device, offset, length, 13)
    try:
        await device.zero(offset, length, fast=True)
    except BlockError as exc:
        if exc.errno != Errno.ENOTSUP:
            raise AssertionError(f"fast zero failed with {Errno(exc.errno).name}") from exc
        expected = data  # ENOTSUP must leave the data alone
    else:
        expected = bytes(length)
    _assert_same(await _read_all(device, offset, length), expected, offset, "zero(fast=True)")


async def _check_trim(device: CheckedDevice) -> None:
    if not device.capabilities.can_trim:
        return
    u = _unit(device)
    lo, length = _fit(device, 512 * 1024, 256 * 1024)
    data = await _fill(device, lo, length, 17)
    start, n = _fit(device, lo + 3 * u, 200 * 1024, end=lo + length)  # unaligned ends
    await device.trim(start, n, fua=device.capabilities.can_fua)
    after = await _read_all(device, lo, length)
    what = f"trim({start}, {n})"
    inside = slice(start - lo, start - lo + n)
    _assert_same(after[: inside.start], data[: inside.start], lo, what)
    _assert_same(after[inside.stop :], data[inside.stop :], start + n, what)
    for i, byte in enumerate(after[inside]):
        if byte not in (0, data[inside.start + i]):
            raise AssertionError(f"after {what}: byte at {start + i} is neither old nor zero")


async def _check_extents(device: CheckedDevice) -> None:
    u = _unit(device)
    written: list[tuple[int, int]] = []
    if device.capabilities.can_write:
        for wished in [(8192, 4096), (300 * 1024 + u, 70 * 1024)]:
            offset, length = _fit(device, *wished)
            await _fill(device, offset, length, offset)
            written.append((offset, length))
    # From the start, and from inside written data.
    for start in (0, _fit(device, written[0][0] + 2 * u, u)[0] if written else u):
        pos, end = start, MiB
        while pos < end:
            extents = await device.extents(pos, end - pos)
            if not extents:
                raise AssertionError(f"extents({pos}, {end - pos}) returned no extent")
            total = sum(e.length for e in extents)
            if total > end - pos:
                raise AssertionError(f"extents({pos}, {end - pos}) describe {total} bytes")
            for extent in extents:
                await _check_extent(device, pos, extent.length, extent.flags, written)
                pos += extent.length


async def _check_extent(
    device: CheckedDevice,
    offset: int,
    length: int,
    flags: StateFlag,
    written: list[tuple[int, int]],
) -> None:
    if not flags:
        return
    for w_offset, w_length in written:
        if w_offset < offset + length and offset < w_offset + w_length:
            raise AssertionError(
                f"extent [{offset}, {offset + length}) has flags {flags!r} "
                f"over data written at [{w_offset}, {w_offset + w_length})"
            )
    if flags & StateFlag.ZERO and await _read_all(device, offset, length) != bytes(length):
        raise AssertionError(f"extent [{offset}, {offset + length}) is ZERO but holds data")


async def _check_bad_requests(device: CheckedDevice) -> None:
    u, caps = _unit(device), device.capabilities
    last = _down(device, device.size - 1)  # the last block, which may be partial
    bad = [
        ("read past the end", Errno.EINVAL, lambda: device.read(last + u, u)),
        ("read across the end", Errno.EINVAL, lambda: device.read(last, 2 * u)),
        ("zero-length read", Errno.EINVAL, lambda: device.read(0, 0)),
        ("negative offset", Errno.EINVAL, lambda: device.read(-u, u)),
        ("read wrapping 2**64", Errno.EINVAL, lambda: device.read(_U64_LIMIT - u, 2 * u)),
        ("extents past the end", Errno.EINVAL, lambda: device.extents(last + u, u)),
        ("zero-length extents", Errno.EINVAL, lambda: device.extents(0, 0)),
        ("cache past the end", Errno.EINVAL, lambda: device.cache(last, 2 * u)),
    ]
    if u > 1:
        bad.append(("misaligned read", Errno.EINVAL, lambda: device.read(u // 2, u)))
    if caps.max_block + u <= device.size:
        too_long = _down(device, caps.max_block + u)
        bad.append(("read over max_block", Errno.EOVERFLOW, lambda: device.read(0, too_long)))
    for what, errno, operation in bad:
        await _expect_errno(errno, what, operation)
    await _read_all(device, 0, _pad(device))  # and the device still works


async def _check_bad_writes(device: CheckedDevice) -> None:
    u, caps = _unit(device), device.capabilities
    last = _down(device, device.size - 1)
    bad = [
        ("write past the end", Errno.ENOSPC, lambda: device.write(last + u, bytes(u))),
        ("write across the end", Errno.ENOSPC, lambda: device.write(last, bytes(2 * u))),
        ("zero-length write", Errno.EINVAL, lambda: device.write(0, b"")),
        ("write wrapping 2**64", Errno.EINVAL, lambda: device.write(_U64_LIMIT - u, bytes(2 * u))),
    ]
    if caps.can_zero:
        bad += [
            ("zero past the end", Errno.ENOSPC, lambda: device.zero(last, 2 * u)),
            ("zero-length zero", Errno.EINVAL, lambda: device.zero(0, 0)),
        ]
    if caps.can_trim:
        bad += [
            ("trim past the end", Errno.EINVAL, lambda: device.trim(last, 2 * u)),
            ("zero-length trim", Errno.EINVAL, lambda: device.trim(0, 0)),
        ]
    tail = _fit(device, last - u, 2 * u)
    before = await _read_all(device, *tail)
    for what, errno, operation in bad:
        await _expect_errno(errno, what, operation)
    _assert_same(await _read_all(device, *tail), before, tail[0], "refused writes")


async def _check_read_only(device: CheckedDevice) -> None:
    u, pad = _unit(device), _pad(device)
    before = await _read_all(device, 0, 2 * pad)
    for what, operation in [
        ("write", lambda: device.write(0, _pattern(u, 1))),
        ("write with fua", lambda: device.write(u, _pattern(u, 2), fua=True)),
        ("trim", lambda: device.trim(0, pad)),
        ("zero", lambda: device.zero(0, pad)),
    ]:
        await _expect_errno(Errno.EPERM, f"{what} on a read-only device", operation)
    _assert_same(await _read_all(device, 0, 2 * pad), before, 0, "refused writes")


async def _check_close(device: CheckedDevice) -> None:
    await device.aclose()
    u = _unit(device)
    for what, operation in [
        ("read", lambda: device.read(0, u)),
        ("write", lambda: device.write(0, bytes(u))),
        ("flush", lambda: device.flush()),
        ("extents", lambda: device.extents(0, u)),
    ]:
        await _expect_errno(Errno.ESHUTDOWN, f"{what} after aclose", operation)
    await device.aclose()  # idempotent
