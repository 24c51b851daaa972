"""Point-in-time copies of an image file: a reflink where the filesystem can, else sparse.

The caller holds writes (WriteGate.held) and has flushed, so the copy is
crash-consistent.  A reflink (FICLONE) is instant and shares blocks; the
fallback copies only the data extents (SEEK_DATA/SEEK_HOLE) with
copy_file_range, so holes stay holes.

An export whose writes land in an overlay (--cow-persist) is not its image
file: `copy_device` copies what the device reads as, extent by extent.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import fcntl
import os
from pathlib import Path

from ovis.block._device import BlockDevice
from ovis.block._fileio import pwrite_full
from ovis.nbd._constants import StateFlag

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_CHUNK = 64 * 1024 * 1024
_COPY_STEP = 4 * 1024 * 1024  # copy_device reads this much at a time


def snapshot_path(image: Path) -> Path:
    """`disk.img` -> `disk.img.snap-20261122T041500.123456`, beside the image."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%f")
    return image.with_name(f"{image.name}.snap-{stamp}")


def copy_image(source: Path, target: Path) -> str:
    """Copy `source` to the new file `target`; returns "reflink" or "sparse copy"."""
    with open(source, "rb") as src, open(target, "xb") as dst:
        try:
            try:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
                return "reflink"
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
                    raise
            _sparse_copy(src.fileno(), dst.fileno())
            os.fsync(dst.fileno())
            return "sparse copy"
        except BaseException:
            target.unlink(missing_ok=True)
            raise


async def copy_device(device: BlockDevice, target: Path) -> str:
    """Copy what `device` reads as into the new sparse file `target`."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        size = device.size
        step = min(_COPY_STEP, device.capabilities.max_block)
        os.ftruncate(fd, size)
        pos = 0
        while pos < size:
            extents = await device.extents(pos, min(size - pos, 1 << 30))
            for extent in extents or []:
                end = min(pos + extent.length, size)
                if not extent.flags & StateFlag.ZERO:  # zeros stay holes
                    for at in range(pos, end, step):
                        data = await device.read(at, min(step, end - at))
                        await asyncio.to_thread(pwrite_full, fd, data, at)
                pos = end
            if not extents:  # a device that describes nothing: copy it as data
                data = await device.read(pos, min(step, size - pos))
                await asyncio.to_thread(pwrite_full, fd, data, pos)
                pos += len(data)
        await asyncio.to_thread(os.fsync, fd)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return "copy of the overlaid view"


def _sparse_copy(src: int, dst: int) -> None:
    size = os.fstat(src).st_size
    os.ftruncate(dst, size)
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                return
            raise
        end = os.lseek(src, start, os.SEEK_HOLE)
        while start < end:
            n = os.copy_file_range(src, dst, min(_CHUNK, end - start), start, start)
            if n == 0:
                raise OSError(errno.EIO, "short copy while taking a snapshot")
            start += n
        offset = end
