"""FileDevice: a raw image file or a block device, nbd-server's classic export.

Why these choices:
- Reads and writes are synchronous `os.pread`/`os.pwrite` on the event loop.
  Against the page cache they take microseconds, and a hop to a worker thread
  costs more than that (for 1 MiB writes too: a writer thread halved their
  throughput, waiting for the GIL).  Only the calls that wait for the disk,
  fdatasync for flush and FUA, run in a thread (asyncio.to_thread).
- `file_at` offers the descriptor itself, so the server can pread, pwrite
  and sendfile on it directly, without a coroutine per layer.
- A file can be given a `size` of its own, as nbd-server's size argument:
  bytes past the real end of the file read as zeros, and writes there grow it.
- Extents come from lseek(SEEK_DATA/SEEK_HOLE): holes are HOLE|ZERO, the rest
  data.  Where the file system cannot answer, the device says `can_extents`
  False and the checked wrapper reports one data extent.
- Trim punches a hole; zero uses FALLOC_FL_ZERO_RANGE (or punches when the
  client allows a hole, or punches and re-allocates on file systems such as
  tmpfs that only punch), and falls back to writing zeros where fallocate
  cannot help.  Fast zero is refused with ENOTSUP in that last case, before
  anything is changed.
- Every connection shares the kernel's page cache, so multi-conn is safe.

The descriptor is opened in the constructor (so a missing or unreadable
image fails at start-up, as an OSError) and closed by `aclose`, which must
not race with operations in flight: the server drains them first.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat

from ovis.block._device import BlockDevice, BlockError, Buffer, Capabilities, Extent
from ovis.block._fileio import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    FALLOCATE_UNSUPPORTED,
    fallocate,
    pread_full,
    pwrite_full,
)
from ovis.nbd._constants import Errno, StateFlag

_PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_ZERO_RANGE = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
_ALLOCATE = FALLOC_FL_KEEP_SIZE
_HOLE = StateFlag.HOLE | StateFlag.ZERO
# extents() stops after this many extents; the caller asks again from there.
_MAX_EXTENTS = 1024


class FileDevice(BlockDevice):
    """The image at `path`; `readonly` opens it O_RDONLY, `size` overrides its size."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        size: int | None = None,
    ) -> None:
        if size is not None and size < 0:
            raise ValueError(f"size must not be negative, not {size}")
        self._fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        try:
            mode = os.fstat(self._fd).st_mode
            is_block = stat.S_ISBLK(mode)
            if not (is_block or stat.S_ISREG(mode)):
                raise ValueError(f"{os.fsdecode(path)} is neither a file nor a block device")
            real_size = os.lseek(self._fd, 0, os.SEEK_END)
            self._size = real_size if size is None else size
            # fallocate modes this file system refused with EOPNOTSUPP.
            self._unsupported: set[int] = set()
            can_punch = not readonly and (is_block or self._probe_punch(real_size))
            self._caps = Capabilities(
                can_write=not readonly,
                can_trim=can_punch,
                can_zero=not readonly,
                can_fast_zero=can_punch,
                can_cache=True,
                # A block device answers SEEK_DATA with "all data", which says nothing.
                can_extents=not is_block and self._probe_seek_data(),
                can_multi_conn=True,
            )
        except BaseException:
            os.close(self._fd)
            raise

    def _probe_punch(self, real_size: int) -> bool:
        # Punching one byte past the end of the file changes no data anywhere.
        return self._try_fallocate(_PUNCH, real_size, 1)

    def _probe_seek_data(self) -> bool:
        try:
            os.lseek(self._fd, 0, os.SEEK_DATA)
        except OSError as exc:
            return exc.errno == errno.ENXIO  # ENXIO: supported, no data at all
        return True

    def _try_fallocate(self, mode: int, offset: int, length: int) -> bool:
        """fallocate, or False where this file system (or this range) cannot."""
        if mode in self._unsupported:
            return False
        try:
            fallocate(self._fd, mode, offset, length)
        except OSError as exc:
            if exc.errno in FALLOCATE_UNSUPPORTED:
                self._unsupported.add(mode)
                return False
            if exc.errno == errno.EINVAL:  # e.g. block devices need sector alignment
                return False
            raise
        return True

    @property
    def size(self) -> int:
        return self._size

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    async def read(self, offset: int, length: int) -> Buffer:
        return pread_full(self._fd, length, offset)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        pwrite_full(self._fd, data, offset)
        if fua:
            await self.flush()

    async def flush(self) -> None:
        await asyncio.to_thread(os.fdatasync, self._fd)

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        # A hint: where punching is unsupported, doing nothing is correct.
        self._try_fallocate(_PUNCH, offset, length)
        if fua:
            await self.flush()

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        if not (
            (may_trim and self._try_fallocate(_PUNCH, offset, length))
            or self._try_fallocate(_ZERO_RANGE, offset, length)
            or self._punch_and_allocate(offset, length)
        ):
            if fast:
                raise BlockError(Errno.ENOTSUP, "file system cannot zero a range quickly")
            await super().zero(offset, length)
        if fua:
            await self.flush()

    def _punch_and_allocate(self, offset: int, length: int) -> bool:
        """Zero without leaving a hole where only punching exists (tmpfs)."""
        if _ALLOCATE in self._unsupported or not self._try_fallocate(_PUNCH, offset, length):
            return False
        # Once punched the range reads as zeros, so a failed re-allocation
        # only leaves a hole the client asked us not to make: still correct.
        self._try_fallocate(_ALLOCATE, offset, length)
        return True

    async def cache(self, offset: int, length: int) -> None:
        os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_WILLNEED)

    async def extents(self, offset: int, length: int) -> list[Extent]:
        end = offset + length
        pos = offset
        out: list[Extent] = []
        while pos < end and len(out) < _MAX_EXTENTS:
            try:
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                data = end  # no data from pos to the end of the file, nor after it
            if data > pos:
                stop = min(data, end)
                out.append(Extent(stop - pos, _HOLE))
            else:
                stop = min(os.lseek(self._fd, pos, os.SEEK_HOLE), end)
                out.append(Extent(stop - pos))
            pos = stop
        return out

    def file_at(self, offset: int, length: int, *, write: bool) -> int:
        # pread_full reads zeros past the end of the file, as read() does.
        return self._fd

    async def aclose(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
