"""Point-in-time copies of an image file: a reflink where the filesystem can, else sparse.

The caller holds writes (WriteGate.held) and has flushed, so the copy is
crash-consistent.  A reflink (FICLONE) is instant and shares blocks; the
fallback copies only the data extents (SEEK_DATA/SEEK_HOLE) with
copy_file_range, so holes stay holes.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import os
from pathlib import Path

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_CHUNK = 64 * 1024 * 1024


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
