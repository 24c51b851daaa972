"""ObjectFile: one open object file, its header in memory, and checksummed I/O.

Mechanics only: the store decides when headers are written and synced
(_local.py); the layout is in _format.py.  Every method here is synchronous
and touches the page cache only; fdatasync belongs to the caller.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path

from ovis.block._device import Buffer

from ._format import (
    HEADER_SIZE,
    SUB_BLOCK,
    ZERO_BLOCK,
    ZERO_CRC,
    ObjectHeader,
    block_crc,
    decode_header,
    next_slot,
)
from ._interface import ChecksumError, ObjectNotFound


def bytes_view(data: Buffer) -> memoryview:
    """A flat byte view of any buffer."""
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def pread_into(fd: int, buf: memoryview, pos: int) -> None:
    """Fill `buf` from `pos`; bytes past the end of the file stay as they were (zero)."""
    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done:]], pos + done)
        if n == 0:
            return
        done += n


def pwrite_all(fd: int, data: Buffer, pos: int) -> None:
    view = bytes_view(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n


def write_new_object(fd: int, data: Buffer, version: int) -> None:
    """Fill a new, empty object file with `data`; all-zero sub-blocks stay holes."""
    view = bytes_view(data)
    header = ObjectHeader(version=version, length=len(view))
    run_start = None  # first sub-block of the run of non-zero ones being gathered
    for k in range((len(view) + SUB_BLOCK - 1) // SUB_BLOCK + 1):
        piece = view[k * SUB_BLOCK : (k + 1) * SUB_BLOCK]
        crc = block_crc(piece) if piece else ZERO_CRC
        zero = crc == ZERO_CRC and piece.tobytes() == ZERO_BLOCK[: len(piece)]
        if not zero:
            header.crcs[k] = crc
            run_start = k if run_start is None else run_start
        elif run_start is not None:
            at = run_start * SUB_BLOCK
            pwrite_all(fd, view[at : k * SUB_BLOCK], HEADER_SIZE + at)
            run_start = None
    os.ftruncate(fd, HEADER_SIZE + len(view))
    at, raw = next_slot(header)
    pwrite_all(fd, raw, at)


def read_version(path: Path, oid: int) -> int:
    """The version in an object file's header, without keeping the file open.

    Raises ObjectNotFound if there is no such file, ChecksumError if neither
    header slot is valid, OSError if it cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ObjectNotFound(oid) from None
    try:
        raw = bytearray(HEADER_SIZE)
        pread_into(fd, memoryview(raw), 0)
    finally:
        os.close(fd)
    return decode_header(raw, oid).version


class ObjectFile:
    """An open object: descriptor, header, and the store's bookkeeping about it."""

    __slots__ = ("closing", "fd", "header", "marked", "oid", "pins", "retired", "unsynced")

    def __init__(self, oid: int, fd: int, header: ObjectHeader) -> None:
        self.oid = oid
        self.fd = fd
        self.header = header
        self.marked = header.dirty  # the DIRTY flag is durable on disk
        self.unsynced = False  # data or header changed since the last fdatasync
        self.pins = 0  # calls using it right now; only an unpinned file is evicted
        self.retired = False  # replaced or removed: close once unpinned
        self.closing: asyncio.Event | None = None  # set while being evicted

    @classmethod
    def open(cls, path: Path, oid: int) -> ObjectFile:
        """Open an object file; recompute its CRCs if a crash left it DIRTY."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFound(oid) from None
        try:
            raw = bytearray(HEADER_SIZE)
            pread_into(fd, memoryview(raw), 0)
            obj = cls(oid, fd, decode_header(raw, oid))
            if obj.header.dirty:
                obj._adopt_data()
        except BaseException:
            os.close(fd)
            raise
        return obj

    def _adopt_data(self) -> None:
        """Trust the data as found after a crash: the CRC array may lag it."""
        length = max(0, os.fstat(self.fd).st_size - HEADER_SIZE)
        used = (length + SUB_BLOCK - 1) // SUB_BLOCK
        buf = bytearray(SUB_BLOCK)
        for k in range(used):
            buf[:] = ZERO_BLOCK
            pread_into(self.fd, memoryview(buf), HEADER_SIZE + k * SUB_BLOCK)
            self.header.crcs[k] = zlib.crc32(buf)
        for k in range(used, len(self.header.crcs)):
            self.header.crcs[k] = ZERO_CRC
        self.header.length = length
        self.unsynced = True

    def read(self, offset: int, length: int) -> memoryview:
        """Read and verify; ChecksumError if any sub-block touched is corrupt."""
        if length == 0:
            return memoryview(b"")
        first, last = offset // SUB_BLOCK, (offset + length - 1) // SUB_BLOCK
        start = first * SUB_BLOCK
        buf = memoryview(bytearray((last + 1 - first) * SUB_BLOCK))
        pread_into(self.fd, buf, HEADER_SIZE + start)
        for k in range(first, last + 1):
            at = (k - first) * SUB_BLOCK
            if zlib.crc32(buf[at : at + SUB_BLOCK]) != self.header.crcs[k]:
                raise ChecksumError(self.oid, f"bytes {k * SUB_BLOCK}+{SUB_BLOCK}")
        return buf[offset - start : offset - start + length]

    def write(self, offset: int, view: memoryview, version: int) -> None:
        """Write data and update CRCs, length and version in the in-memory header."""
        end = offset + len(view)
        crcs: dict[int, int] = {}
        if not view:
            self.header.version = version
            self.unsynced = True
            return
        for k in range(offset // SUB_BLOCK, (end + SUB_BLOCK - 1) // SUB_BLOCK):
            lo, hi = max(offset, k * SUB_BLOCK), min(end, (k + 1) * SUB_BLOCK)
            piece = view[lo - offset : hi - offset]
            if hi - lo == SUB_BLOCK:
                crcs[k] = zlib.crc32(piece)
            else:  # partial: verify the old bytes before vouching for them again
                block = bytearray(self.read(k * SUB_BLOCK, SUB_BLOCK))
                block[lo - k * SUB_BLOCK : hi - k * SUB_BLOCK] = piece
                crcs[k] = zlib.crc32(block)
        pwrite_all(self.fd, view, HEADER_SIZE + offset)
        for k, crc in crcs.items():
            self.header.crcs[k] = crc
        self.header.length = max(self.header.length, end)
        self.header.version = version
        self.unsynced = True

    def write_header(self, flags: int) -> None:
        """Write the in-memory header with `flags` to the next slot (not synced)."""
        self.header.flags = flags
        at, raw = next_slot(self.header)
        pwrite_all(self.fd, raw, at)

    def close(self) -> None:
        os.close(self.fd)
