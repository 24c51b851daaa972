"""Block bitmaps: one bit per block, in memory or persisted to a file.

Design note.  Proxy mode marks the blocks its cache holds; a mirror job marks
the blocks its destination lacks.  Both need "set/clear a run", "find the
next set (or clear) block" and "how many are set", fast for millions of
blocks, so the bits live in a bytearray (bit i is bit i % 8 of byte i // 8,
least significant first) and searches skip whole bytes with the C regex
engine, as the cow overlay's map does.

Persisted bitmap file (`PersistentBitmap`), all integers big-endian:

    offset 0    header: magic "OVISBMP\\0", u32 version (1), u32 reserved,
                u64 block size, u64 disk size, 32-byte tag
    offset 4096 the bits, ceil(nblocks / 8) bytes

The tag names what the bits are about (the proxy stores a digest of its
source's identity) so a bitmap is never reused against another disk.  The
header is written once, under a temporary name that is fsynced and renamed
into place, so a bitmap file either exists whole or not at all.  The bits
start on a page boundary and are written back in whole 4 KiB pages.

Crash order, the invariant this module exists for: a bit is written to the
file only after the data it covers is durable.  `sync(flush_data)` copies
the changed pages first, then awaits `flush_data()` (the cache's fdatasync),
and only then writes the copies and fdatasyncs the bitmap.  A bit set while
the data flush runs is not in the copy, so it waits for the next sync.  A
crash at any point leaves every persisted bit covering durable data; bits
set since the last sync are lost, which costs a refetch, never correctness.
This relies on bits only being set after the data they cover was written,
which is the caller's side of the contract.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import struct
from collections.abc import Awaitable, Callable, Iterator

from ovis.block._fileio import pread_full, pwrite_full

_HEADER = struct.Struct(">8sIIQQ32s")
_MAGIC = b"OVISBMP\0"
_VERSION = 1
_DATA_OFFSET = 4096
_PAGE = 4096  # bytes of bits per write-back unit: 32768 blocks
_NOT_00 = re.compile(b"[^\x00]")
_NOT_FF = re.compile(b"[^\xff]")
_POPCOUNT = bytes(bin(i).count("1") for i in range(256))


class Bitmap:
    """`nbits` bits, all clear to start with; an in-memory bitmap."""

    def __init__(self, nbits: int) -> None:
        if nbits < 0:
            raise ValueError(f"nbits must not be negative, not {nbits}")
        self.nbits = nbits
        self._bits = bytearray(-(-nbits // 8))
        self._count = 0

    @property
    def count(self) -> int:
        """How many bits are set."""
        return self._count

    def all_set(self) -> bool:
        return self._count == self.nbits

    def __getitem__(self, index: int) -> bool:
        return bool(self._bits[index >> 3] >> (index & 7) & 1)

    def set(self, first: int, count: int = 1) -> None:
        """Set bits [first, first + count)."""
        self._change(first, count, True)

    def clear(self, first: int, count: int = 1) -> None:
        """Clear bits [first, first + count)."""
        self._change(first, count, False)

    def _change(self, first: int, count: int, value: bool) -> None:
        if count <= 0:
            return
        if first < 0 or first + count > self.nbits:
            raise IndexError(f"bits [{first}, {first + count}) outside [0, {self.nbits})")
        end = first + count
        lo, hi = first >> 3, (end - 1) >> 3
        before = self._bits[lo : hi + 1].translate(_POPCOUNT)
        head_mask = (0xFF << (first & 7)) & 0xFF
        tail_mask = 0xFF >> (7 - ((end - 1) & 7))
        if lo == hi:
            masks = [head_mask & tail_mask]
        else:
            masks = [head_mask] + [0xFF] * (hi - lo - 1) + [tail_mask]
        if value:
            if hi - lo > 1:
                self._bits[lo + 1 : hi] = b"\xff" * (hi - lo - 1)
            self._bits[lo] |= masks[0]
            self._bits[hi] |= masks[-1]
        else:
            if hi - lo > 1:
                self._bits[lo + 1 : hi] = bytes(hi - lo - 1)
            self._bits[lo] &= ~masks[0] & 0xFF
            self._bits[hi] &= ~masks[-1] & 0xFF
        after = self._bits[lo : hi + 1].translate(_POPCOUNT)
        self._count += sum(after) - sum(before)
        self._changed(lo, hi + 1)

    def _changed(self, lo: int, hi: int) -> None:
        """Bytes [lo, hi) of the bits changed; persistence hooks in here."""

    def find(self, value: bool, start: int, end: int | None = None) -> int:
        """The first index in [start, end) whose bit equals `value`, else `end`."""
        end = self.nbits if end is None else min(end, self.nbits)
        index = start
        skip = _NOT_00 if value else _NOT_FF  # bytes that cannot hold a match
        while index < end:
            if index & 7 == 0:
                found = skip.search(self._bits, index >> 3, -(-end // 8))
                if found is None:
                    return end
                index = max(index, found.start() << 3)
                if index >= end:
                    return end
            if self[index] == value:
                return index
            index += 1
        return end

    def runs(
        self, value: bool, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, int]]:
        """(first, count) of each maximal run of bits equal to `value` in [start, end)."""
        end = self.nbits if end is None else min(end, self.nbits)
        index = start
        while index < end:
            first = self.find(value, index, end)
            if first >= end:
                return
            stop = self.find(not value, first, end)
            yield first, stop - first
            index = stop

    def to_bytes(self) -> bytes:
        return bytes(self._bits)


class PersistentBitmap(Bitmap):
    """A Bitmap mirrored to a file, written back by `sync` (see the module note).

    Open with `PersistentBitmap.open(path, ...)`: it creates the file if it
    is missing and otherwise loads it, raising ValueError if its header does
    not match `block_size`, `disk_size` or `tag`, or if another process
    holds it (an exclusive flock is kept while open).
    """

    def __init__(self, fd: int, path: str, block_size: int, disk_size: int) -> None:
        super().__init__(-(-disk_size // block_size))
        self.path = path
        self.block_size = block_size
        self.disk_size = disk_size
        self._fd = fd
        self._dirty: set[int] = set()  # pages changed since the last sync
        self._sync_lock = asyncio.Lock()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, block_size: int, disk_size: int, tag: bytes = b""
    ) -> PersistentBitmap:
        path = os.fspath(path)
        if block_size <= 0 or block_size & (block_size - 1):
            raise ValueError(f"block size must be a power of two, not {block_size}")
        if len(tag) > 32:
            raise ValueError("a bitmap tag is at most 32 bytes")
        header = _HEADER.pack(_MAGIC, _VERSION, 0, block_size, disk_size, tag)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = _create(path, header)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"bitmap {path} is in use elsewhere") from None
            bitmap = cls(fd, path, block_size, disk_size)
            bitmap._load(header)
        except BaseException:
            os.close(fd)
            raise
        return bitmap

    def _load(self, header: bytes) -> None:
        found = pread_full(self._fd, _HEADER.size, 0)
        if found[:8] != _MAGIC:
            raise ValueError(f"{self.path} is not an ovis bitmap")
        if os.fstat(self._fd).st_size < _DATA_OFFSET:  # created whole, so it was cut short
            raise ValueError(f"{self.path} is truncated: its header is incomplete")
        if found != header:
            _, version, _, block_size, disk_size, tag = _HEADER.unpack(found)
            raise ValueError(
                f"{self.path} (version {version}) is for a {disk_size}-byte disk in "
                f"{block_size}-byte blocks with tag {tag.rstrip(bytes(1)).hex() or '-'}, "
                "not this one"
            )
        nbytes = len(self._bits)
        if os.fstat(self._fd).st_size > _DATA_OFFSET + nbytes:
            raise ValueError(f"{self.path} is longer than its header says")
        # A file shorter than that was never synced past its end: those bits are clear.
        self._bits[:] = pread_full(self._fd, nbytes, _DATA_OFFSET)
        if self.nbits & 7 and nbytes:
            self._bits[-1] &= (1 << (self.nbits & 7)) - 1  # ignore bits past the end
        self._count = sum(self._bits.translate(_POPCOUNT))

    @property
    def unsynced(self) -> bool:
        """True if some change has not been written to the file yet."""
        return bool(self._dirty)

    def _changed(self, lo: int, hi: int) -> None:
        self._dirty.update(range(lo // _PAGE, (hi - 1) // _PAGE + 1))

    async def sync(self, flush_data: Callable[[], Awaitable[None]]) -> None:
        """Make the data durable with `flush_data()`, then persist the bits.

        Always awaits `flush_data()`, so `sync` is also a complete flush of
        the data.  If it or the write-back fails, the pages stay marked as
        changed and the exception propagates; nothing unsafe was written.
        """
        async with self._sync_lock:  # a second sync must not overtake the first
            dirty, self._dirty = self._dirty, set()
            pages = [
                (page, bytes(self._bits[page * _PAGE : (page + 1) * _PAGE]))
                for page in sorted(dirty)
            ]
            try:
                await flush_data()
                if pages:
                    await asyncio.to_thread(self._write_pages, pages)
            except BaseException:
                self._dirty |= dirty
                raise

    def _write_pages(self, pages: list[tuple[int, bytes]]) -> None:
        for page, data in pages:
            pwrite_full(self._fd, data, _DATA_OFFSET + page * _PAGE)
        os.fdatasync(self._fd)

    def close(self) -> None:
        """Close the file without syncing (the caller syncs first); idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _create(path: str, header: bytes) -> int:
    """Write a bitmap with no bits set under a temporary name, then rename it into place."""
    temp = f"{path}.tmp"
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        pwrite_full(fd, header, 0)
        os.ftruncate(fd, _DATA_OFFSET)
        os.fsync(fd)
        os.rename(temp, path)
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        os.close(fd)
        raise
    return fd
