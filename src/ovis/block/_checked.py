"""CheckedDevice: the one place where requests are checked against a device.

Why one wrapper: nbdkit checks every invariant once (server/backend.c) so
that plugins never re-check bounds, and a bug in one backend's checks cannot
let a bad request through.  The server wraps every export's device stack in
a `CheckedDevice`; everything below it may assume valid requests.

Errors (NBD values from research/nbd-protocol.md §5-6), checked in order:

1. after `aclose()`, every operation: ESHUTDOWN.
2. bad arguments, EINVAL: a negative offset or length, a zero length, a range
   whose end does not fit in a u64 (offset + length >= 2**64), or an offset
   or length that is not a multiple of `min_block`.  A length that reaches
   exactly the end of the device may be a partial block, so a device whose
   size is not a multiple of `min_block` can still be read to its end.
3. capabilities: write/trim/zero on a device that cannot write: EPERM (the
   spec's SHOULD; qemu-nbd sends EINVAL).  trim without `can_trim`, zero
   without `can_zero`, flush without `can_flush`, cache without
   `can_cache`, or fua=True without `can_fua`: EINVAL, the error for a
   command or flag that was not advertised.
4. range past the end: ENOSPC for write and zero (the spec asks for it, as
   for a full disk), EINVAL for read, trim, cache and extents.
5. payload size: a read longer than `max_block` gets EOVERFLOW (the spec's
   error for an oversize request without a payload, which the server can
   refuse without reading more bytes); a write longer than `max_block`
   gets EINVAL.  trim, zero, cache and extents carry no payload and may be
   longer than `max_block`.
6. zero(fast=True) without `can_fast_zero`: ENOTSUP, at once and changing
   nothing, so that a client (or a filter above) falls back to writing
   zeros.  The protocol layer answers EINVAL earlier for a FAST_ZERO flag
   it did not advertise; this covers callers inside ovis.

Results are checked too: a read that returns the wrong number of bytes is
EIO, and `extents()` is normalised (clipped to the request, neighbours with
equal flags merged, unknown flag bits cleared, at least one extent; a device
without `can_extents` is one data extent, which is always truthful).  An
OSError escaping the device becomes `block_error_from_os(exc)`.

`size` and `capabilities` are read once, when wrapping: NBD advertises them
at negotiation and they cannot change under a connected client.
"""

from __future__ import annotations

from typing import NoReturn

from ovis.block._device import (
    BlockDevice,
    BlockError,
    Buffer,
    Capabilities,
    Extent,
    Filter,
    block_error_from_os,
)
from ovis.nbd._constants import Errno, StateFlag

_U64_LIMIT = 1 << 64
_KNOWN_FLAGS = StateFlag.HOLE | StateFlag.ZERO


def _nbytes(data: Buffer) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


def normalise_extents(extents: list[Extent], length: int) -> list[Extent]:
    """Clip `extents` to `length` bytes, merge equal neighbours, never empty."""
    out: list[Extent] = []
    remaining = length
    for extent in extents:
        if remaining <= 0:
            break
        n = min(extent.length, remaining)
        flags = extent.flags & _KNOWN_FLAGS
        if out and out[-1].flags == flags:
            out[-1] = Extent(out[-1].length + n, flags)
        else:
            out.append(Extent(n, flags))
        remaining -= n
    # A device that described nothing broke its contract; "data" is the one
    # answer that is true of any range.
    return out or [Extent(length)]


class CheckedDevice(Filter):
    """Wraps `device` and refuses, with the NBD errno, anything it must not see.

    Every request passes through here, so the checks are written for speed:
    one combined test on the common path, and the work of finding which rule
    was broken only once one was.  OSError is caught with plain try/except,
    which costs nothing in Python 3.11 until something is raised.
    """

    def __init__(self, device: BlockDevice) -> None:
        super().__init__(device)
        self._size = device.size
        self._caps = device.capabilities
        self._align_mask = self._caps.min_block - 1  # min_block is a power of two
        self._max_block = self._caps.max_block
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def _check_args(self, offset: int, length: int) -> None:
        end = offset + length
        mask = self._align_mask
        if (
            self._closed
            or offset < 0
            or length <= 0
            or end >= _U64_LIMIT
            or offset & mask
            or (length & mask and end != self._size)
        ):
            self._refuse_args(offset, length)

    def _refuse_args(self, offset: int, length: int) -> NoReturn:
        if self._closed:
            raise BlockError(Errno.ESHUTDOWN, "device is closed")
        if offset < 0 or length <= 0:
            raise BlockError(Errno.EINVAL, f"bad range: offset {offset}, length {length}")
        if offset + length >= _U64_LIMIT:
            raise BlockError(Errno.EINVAL, "range wraps past 2**64")
        raise BlockError(Errno.EINVAL, f"range is not aligned to {self._caps.min_block} bytes")

    def _check_bounds(self, offset: int, length: int, errno: Errno) -> None:
        if offset + length > self._size:
            raise BlockError(errno, f"range ends past the device size {self._size}")

    def _check_writable(self, fua: bool) -> None:
        if not self._caps.can_write:
            raise BlockError(Errno.EPERM, "device is read-only")
        if fua and not self._caps.can_fua:
            raise BlockError(Errno.EINVAL, "FUA not supported")

    async def read(self, offset: int, length: int) -> Buffer:
        self._check_args(offset, length)
        self._check_bounds(offset, length, Errno.EINVAL)
        if length > self._max_block:
            raise BlockError(Errno.EOVERFLOW, f"read longer than {self._max_block}")
        try:
            data = await self.next.read(offset, length)
        except OSError as exc:
            raise block_error_from_os(exc) from exc
        if len(data) != length and _nbytes(data) != length:
            raise BlockError(Errno.EIO, f"device read {_nbytes(data)} bytes, not {length}")
        return data

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        length = _nbytes(data)
        self._check_args(offset, length)
        self._check_writable(fua)
        self._check_bounds(offset, length, Errno.ENOSPC)
        if length > self._max_block:
            raise BlockError(Errno.EINVAL, f"write longer than {self._max_block}")
        try:
            await self.next.write(offset, data, fua=fua)
        except OSError as exc:
            raise block_error_from_os(exc) from exc

    async def flush(self) -> None:
        if self._closed:
            raise BlockError(Errno.ESHUTDOWN, "device is closed")
        if not self._caps.can_flush:
            raise BlockError(Errno.EINVAL, "flush not supported")
        try:
            await self.next.flush()
        except OSError as exc:
            raise block_error_from_os(exc) from exc

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        self._check_args(offset, length)
        self._check_writable(fua)
        if not self._caps.can_trim:
            raise BlockError(Errno.EINVAL, "trim not supported")
        self._check_bounds(offset, length, Errno.EINVAL)
        try:
            await self.next.trim(offset, length, fua=fua)
        except OSError as exc:
            raise block_error_from_os(exc) from exc

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        self._check_args(offset, length)
        self._check_writable(fua)
        if not self._caps.can_zero:
            raise BlockError(Errno.EINVAL, "write zeroes not supported")
        self._check_bounds(offset, length, Errno.ENOSPC)
        if fast and not self._caps.can_fast_zero:
            raise BlockError(Errno.ENOTSUP, "fast zero not supported")
        try:
            await self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)
        except OSError as exc:
            raise block_error_from_os(exc) from exc

    async def cache(self, offset: int, length: int) -> None:
        self._check_args(offset, length)
        if not self._caps.can_cache:
            raise BlockError(Errno.EINVAL, "cache not supported")
        self._check_bounds(offset, length, Errno.EINVAL)
        try:
            await self.next.cache(offset, length)
        except OSError as exc:
            raise block_error_from_os(exc) from exc

    async def extents(self, offset: int, length: int) -> list[Extent]:
        self._check_args(offset, length)
        self._check_bounds(offset, length, Errno.EINVAL)
        if not self._caps.can_extents:
            return [Extent(length)]
        try:
            extents = await self.next.extents(offset, length)
        except OSError as exc:
            raise block_error_from_os(exc) from exc
        return normalise_extents(extents, length)

    def file_at(self, offset: int, length: int, *, write: bool) -> int:
        """The file below for a request that passes every check here, else -1.

        A request that would be refused gets -1, so that the full path
        refuses it with the right error.
        """
        end = offset + length
        if (
            self._closed
            or length <= 0
            or offset < 0
            or end > self._size
            or length > self._max_block
            or offset & self._align_mask
            or (length & self._align_mask and end != self._size)
            or (write and not self._caps.can_write)
        ):
            return -1
        return self.next.file_at(offset, length, write=write)

    async def aclose(self) -> None:
        """Close the device once; later calls (and all operations) see ESHUTDOWN."""
        if self._closed:
            return
        self._closed = True  # before awaiting: closed even if the device's aclose fails
        try:
            await self.next.aclose()
        except OSError as exc:
            raise block_error_from_os(exc) from exc
