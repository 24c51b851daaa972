"""The BlockDevice contract: one small interface that leaves and filters share.

A device answers capability questions (`capabilities`) separately from doing
I/O, in the manner of nbdkit's callback table.  Range, flag and capability
checks live once, in `CheckedDevice`; devices never re-check bounds and may
assume every request they see is inside [0, size) and allowed by their
capabilities.

Failure: every operation either completes or raises `BlockError`, whose
`errno` is the NBD error value to send to the client.  An `OSError` escaping a
device is translated by `CheckedDevice` (ENOSPC-like errors to ENOSPC, the
rest to EIO).
"""

from __future__ import annotations

import abc
import dataclasses
import errno as _os_errno
from typing import TypeAlias

from ovis.nbd._constants import Errno, StateFlag

MiB = 1024 * 1024

# collections.abc.Buffer needs Python 3.12; these are the buffers we pass around.
Buffer: TypeAlias = bytes | bytearray | memoryview


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    """What a device can do; the NBD transmission flags are derived from it."""

    can_write: bool = True
    can_flush: bool = True
    can_fua: bool = True
    can_trim: bool = False
    can_zero: bool = True
    can_fast_zero: bool = False
    can_cache: bool = False
    can_extents: bool = False
    # True only if a flush on one connection makes writes from every other
    # connection durable and visible, i.e. all connections share one cache.
    can_multi_conn: bool = False
    rotational: bool = False
    min_block: int = 1
    preferred_block: int = 4096
    max_block: int = 32 * MiB

    def __post_init__(self) -> None:
        for name in ("min_block", "preferred_block", "max_block"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if self.min_block & (self.min_block - 1) or self.min_block > 64 * 1024:
            raise ValueError("min_block must be a power of two of at most 64 KiB")
        if self.preferred_block & (self.preferred_block - 1):
            raise ValueError("preferred_block must be a power of two")
        if not self.min_block <= self.preferred_block <= self.max_block:
            raise ValueError("need min_block <= preferred_block <= max_block")
        if self.can_fast_zero and not self.can_zero:
            raise ValueError("can_fast_zero requires can_zero")
        if not self.can_write and (self.can_trim or self.can_zero):
            raise ValueError("a read-only device cannot trim or zero")


@dataclasses.dataclass(frozen=True, slots=True)
class Extent:
    """A run of `length` bytes sharing base:allocation `flags` (HOLE, ZERO)."""

    length: int
    flags: StateFlag = StateFlag(0)  # noqa: RUF009 (an immutable int)

    def __post_init__(self) -> None:
        if self.length <= 0:
            raise ValueError(f"extent length must be positive, not {self.length}")

    @property
    def is_data(self) -> bool:
        return not self.flags


class BlockError(Exception):
    """An operation failed; `errno` is the NBD error value for the client."""

    def __init__(self, errno: Errno, message: str = "") -> None:
        super().__init__(message or errno.name)
        self.errno = errno


_NO_SPACE = {_os_errno.ENOSPC, _os_errno.EDQUOT, _os_errno.EFBIG}
_NOT_PERMITTED = {_os_errno.EROFS, _os_errno.EPERM, _os_errno.EACCES}


def block_error_from_os(exc: OSError) -> BlockError:
    """Translate a host OSError into the NBD error value the spec asks for."""
    if exc.errno in _NO_SPACE:
        code = Errno.ENOSPC
    elif exc.errno in _NOT_PERMITTED:
        code = Errno.EPERM
    else:
        code = Errno.EIO
    return BlockError(code, f"{exc.strerror or exc}")


class BlockDevice(abc.ABC):
    """A virtual disk of `size` bytes.

    Contract for implementers:
    - `read` returns exactly `length` bytes (a bytes-like object the caller
      may hold until its next call on the device).
    - `write` returns once the data is visible to later reads; with
      `fua=True`, once it is also durable.
    - `flush` returns once every write that has returned is durable.
    - `trim` is a hint: it may deallocate or do nothing, but must never
      change bytes outside the range, and the range may read back as
      anything the device held or zeros.
    - `zero` makes the range read back as zeros.  `may_trim` allows punching
      a hole; `fast=True` means: raise BlockError(ENOTSUP) at once, changing
      nothing, unless zeroing is cheaper than writing zeros.
    - `cache` is a prefetch hint with no visible effect.
    - `extents` describes [offset, offset+length) from `offset` on; it may
      describe less than `length` but at least one byte.  It must never
      report data as a hole or as zero.
    - `aclose` releases resources; it is idempotent and closes even if it
      fails.  The owner drains its operations first: aclose with requests
      in flight is undefined.
    - `size` and `capabilities` never change during a device's life; layers
      above may read them once.
    """

    @property
    @abc.abstractmethod
    def size(self) -> int: ...

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    async def read(self, offset: int, length: int) -> Buffer: ...

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        raise BlockError(Errno.EPERM, "device is read-only")

    async def flush(self) -> None:
        return None

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        return None

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        if fast:
            raise BlockError(Errno.ENOTSUP, "fast zero not supported")
        chunk = min(length, 1 * MiB)
        zeros = bytes(chunk)
        end = offset + length
        while offset < end:
            n = min(chunk, end - offset)
            await self.write(offset, memoryview(zeros)[:n])
            offset += n
        if fua:
            await self.flush()

    async def cache(self, offset: int, length: int) -> None:
        return None

    async def extents(self, offset: int, length: int) -> list[Extent]:
        return [Extent(length)]

    async def aclose(self) -> None:
        return None

    def file_at(self, offset: int, length: int, *, write: bool) -> int:
        """A descriptor to pread (or pwrite) this range at the same offsets, or -1.

        An optional shortcut for the server's hot path.  A device returns a
        descriptor only if, right now, `os.pread` on it (`os.pwrite` when
        `write`) does exactly what `read` (`write` without FUA) would: the
        same bytes, the same effects, nothing to check, count, hold or
        track.  The answer holds until the caller next yields to the event
        loop.  The default, -1, is always correct.
        """
        return -1


class Filter(BlockDevice):
    """A device layered on `next`; whatever a filter does not override passes through.

    Except `file_at`: a filter may change what read and write do, so it
    offers no file unless it is `Transparent`.
    """

    def __init__(self, next: BlockDevice) -> None:
        self.next = next

    @property
    def size(self) -> int:
        return self.next.size

    @property
    def capabilities(self) -> Capabilities:
        return self.next.capabilities

    async def read(self, offset: int, length: int) -> Buffer:
        return await self.next.read(offset, length)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        await self.next.write(offset, data, fua=fua)

    async def flush(self) -> None:
        await self.next.flush()

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        await self.next.trim(offset, length, fua=fua)

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        await self.next.zero(offset, length, may_trim=may_trim, fast=fast, fua=fua)

    async def cache(self, offset: int, length: int) -> None:
        await self.next.cache(offset, length)

    async def extents(self, offset: int, length: int) -> list[Extent]:
        return await self.next.extents(offset, length)

    async def aclose(self) -> None:
        await self.next.aclose()


class Transparent(Filter):
    """A filter that never changes the bytes read or written, only who may and when.

    It offers the file below it (`file_at`) as long as `passes` says that a
    plain pread or pwrite, done now, needs nothing from it.
    """

    def passes(self, write: bool) -> bool:
        return True

    def file_at(self, offset: int, length: int, *, write: bool) -> int:
        if not self.passes(write):
            return -1
        return self.next.file_at(offset, length, write=write)
