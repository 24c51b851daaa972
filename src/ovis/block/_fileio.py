"""Linux file primitives the file device and the cow overlay share.

Why a module of its own: Python's `os` has pread/pwrite but no way to punch a
hole or zero a range, so `fallocate` is bound here once through ctypes, and
the loops that turn short reads and writes into whole ones live beside it.

Contracts:
- `pread_full` returns exactly `length` bytes; bytes past the end of the file
  read as zeros, as they do in a sparse image whose size was given explicitly.
- `pwrite_full` writes all of `data` or raises OSError.
- `fallocate` raises OSError with the host errno; `FALLOCATE_UNSUPPORTED`
  lists the errnos meaning "this file system cannot", which callers treat as
  a missing feature rather than as a failed request.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from typing import cast

from ovis.block._device import Buffer

# From <linux/falloc.h>.
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

FALLOCATE_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def _bind_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no dynamic libc (static builds)
        return None
    # fallocate64 takes a 64-bit off_t even on 32-bit hosts.
    func = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if func is None:  # pragma: no cover - non-glibc/musl libc
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", func)


_fallocate = _bind_fallocate()


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2); raises OSError(EOPNOTSUPP) where the libc lacks it."""
    if _fallocate is None:  # pragma: no cover - see _bind_fallocate
        raise OSError(errno.EOPNOTSUPP, "fallocate is not available")
    while _fallocate(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))


def pread_full(fd: int, length: int, offset: int) -> bytes:
    """Read exactly `length` bytes at `offset`; past end of file reads zeros."""
    data = os.pread(fd, length, offset)
    if len(data) == length:  # the hot path: one syscall, one copy
        return data
    parts = [data]
    got = len(data)
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            parts.append(bytes(length - got))
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def pwrite_full(fd: int, data: Buffer, offset: int) -> None:
    """Write all of `data` at `offset` (pwrite may write less than asked)."""
    done = os.pwrite(fd, data, offset)
    total = data.nbytes if isinstance(data, memoryview) else len(data)
    if done == total:  # the hot path: one syscall
        return
    view = memoryview(data).cast("B")
    while done < total:
        n = os.pwrite(fd, view[done:], offset + done)
        if n == 0:  # pragma: no cover - the kernel reports errors instead
            raise OSError(errno.EIO, "pwrite wrote nothing")
        done += n
