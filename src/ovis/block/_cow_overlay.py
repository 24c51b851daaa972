"""The cow filter's overlay: a sparse data file plus a map of block states.

Design note (the split follows nbdkit's cow.c and blk.c: the filter decides
what a request means, this module owns where blocks live):

- The disk is cut into blocks of `block_size` bytes.  Block i lives at offset
  i * block_size of the overlay data file, a sparse file as large as the disk,
  so blocks never written cost no space and no lookup table is needed.
- Each block has one state: BASE (read it from the device below), DATA (the
  overlay holds the whole block) or ZERO (it reads as zeros; its overlay
  space is punched out).  The map keeps one byte per block rather than two
  bits so that runs of equal state can be found by the C regex engine; a
  1 TiB disk with 64 KiB blocks costs 16 MiB.
- A throw-away overlay is a temporary file (in TMPDIR, as tempfile chooses)
  unlinked at once, so nothing is left behind even after a crash.
  Durability does not matter for it, and `sync` does nothing.
- A persisted overlay (`path`) keeps its map in `path + ".bitmap"`: a header
  (magic, version, block size, disk size) and then one state byte per block.
  The map is written only after the data it describes is durable: `sync`
  fdatasyncs the data file, then writes the parts of the map that changed,
  then fdatasyncs the map.  After a crash every block shows a state that was
  synced, or a later one whose data was synced with it; never a state that
  points at data that is not on disk.  A data file found without a map was
  never synced, so it holds nothing acknowledged as durable and is emptied.
- A persisted overlay is flock()ed: two writers on one overlay would corrupt
  each other's map.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import os
import re
import struct
import tempfile

from ovis.block._device import Buffer
from ovis.block._fileio import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    fallocate,
    pread_full,
    pwrite_full,
)


class BlockState(enum.IntEnum):
    BASE = 0
    DATA = 1
    ZERO = 2


_HEADER = struct.Struct(">8sIIQQ")  # magic, version, reserved, block size, disk size
_MAGIC = b"OVISCOW\0"
_VERSION = 1
# The map is written back in chunks of this many states, the dirty unit.
_MAP_CHUNK = 4096
_NOT_STATE = {state: re.compile(b"[^" + re.escape(bytes([state])) + b"]") for state in BlockState}
_INVALID_STATE = re.compile(b"[^\x00-\x02]")


class Overlay:
    """Blocks of the disk that differ from the base, and what they hold."""

    def __init__(
        self,
        size: int,
        block_size: int,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.size = size
        self.block_size = block_size
        self.nblocks = -(-size // block_size)
        self._dirty: set[int] = set()  # map chunks changed since the last sync
        self._sync_lock = asyncio.Lock()
        self._map_fd = -1
        if path is None:
            self._fd, temp_path = tempfile.mkstemp(prefix="ovis-cow-")
            os.unlink(temp_path)
            self._states = bytearray(self.nblocks)
            os.ftruncate(self._fd, size)
            return
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._open_persisted(os.fspath(path))
        except BaseException:
            for fd in (self._fd, self._map_fd):
                if fd >= 0:
                    os.close(fd)
            raise

    @property
    def persistent(self) -> bool:
        return self._map_fd >= 0

    def _open_persisted(self, path: str) -> None:
        map_path = path + ".bitmap"
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"overlay {path} is in use elsewhere") from None
        try:
            self._map_fd = os.open(map_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            self._create_map(map_path)
        else:
            self._load_map(map_path)
        if os.fstat(self._fd).st_size != self.size:
            os.ftruncate(self._fd, self.size)

    def _create_map(self, map_path: str) -> None:
        os.ftruncate(self._fd, 0)  # data without a map was never synced
        os.ftruncate(self._fd, self.size)
        os.fsync(self._fd)
        self._states = bytearray(self.nblocks)
        header = _HEADER.pack(_MAGIC, _VERSION, 0, self.block_size, self.size)
        # Written whole under a temporary name, so a map either exists complete or not at all.
        temp_path = map_path + ".tmp"
        fd = os.open(temp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            pwrite_full(fd, header + self._states, 0)
            os.fsync(fd)
            os.rename(temp_path, map_path)
        except BaseException:
            os.close(fd)
            raise
        self._map_fd = fd
        dir_fd = os.open(os.path.dirname(os.path.abspath(map_path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _load_map(self, map_path: str) -> None:
        raw = pread_full(self._map_fd, _HEADER.size + self.nblocks, 0)
        magic, version, _, block_size, size = _HEADER.unpack_from(raw)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError(f"{map_path} is not an ovis overlay map")
        if (block_size, size) != (self.block_size, self.size):
            raise ValueError(
                f"{map_path} is for a {size}-byte disk in {block_size}-byte blocks, "
                f"not {self.size} in {self.block_size}"
            )
        if os.fstat(self._map_fd).st_size != len(raw):
            raise ValueError(f"{map_path} has the wrong length")
        self._states = bytearray(raw[_HEADER.size :])
        if _INVALID_STATE.search(self._states):
            raise ValueError(f"{map_path} holds an unknown block state")

    def span(self, block: int) -> tuple[int, int]:
        """(offset, length) of `block`; the last block may be short."""
        start = block * self.block_size
        return start, min(self.block_size, self.size - start)

    def state(self, block: int) -> BlockState:
        return BlockState(self._states[block])

    def runs(self, first: int, end: int) -> list[tuple[BlockState, int, int]]:
        """(state, first block, count) for each run of equal state in [first, end)."""
        out = []
        block = first
        while block < end:
            state = self._states[block]
            found = _NOT_STATE[BlockState(state)].search(self._states, block, end)
            stop = found.start() if found else end
            out.append((BlockState(state), block, stop - block))
            block = stop
        return out

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the overlay file; only meaningful where the state is DATA."""
        return pread_full(self._fd, length, offset)

    def write(self, offset: int, data: Buffer) -> None:
        """Store `data` and mark every block it touches DATA.

        The caller writes whole blocks, or part of a block already in DATA
        state: either way, each block touched holds all its bytes afterwards.
        """
        pwrite_full(self._fd, data, offset)
        length = data.nbytes if isinstance(data, memoryview) else len(data)
        first = offset // self.block_size
        self._set(first, (offset + length - 1) // self.block_size + 1 - first, BlockState.DATA)

    def mark_zero(self, first: int, count: int) -> None:
        """Make `count` blocks from `first` read as zeros, freeing their space."""
        start = first * self.block_size
        length = min(count * self.block_size, self.size - start)
        with contextlib.suppress(OSError):  # freeing space is a nicety; the map decides
            fallocate(self._fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, start, length)
        self._set(first, count, BlockState.ZERO)

    def _set(self, first: int, count: int, state: BlockState) -> None:
        self._states[first : first + count] = bytes([state]) * count
        if self._map_fd >= 0:
            self._dirty.update(range(first // _MAP_CHUNK, (first + count - 1) // _MAP_CHUNK + 1))

    async def sync(self) -> None:
        """Make every write so far durable, data first and then the map."""
        if self._map_fd < 0:
            return
        # One sync at a time: a second must not return while the first is
        # still writing the map chunks that it took away from `_dirty`.
        async with self._sync_lock:
            dirty, self._dirty = self._dirty, set()
            chunks = [
                (c, bytes(self._states[c * _MAP_CHUNK : (c + 1) * _MAP_CHUNK]))
                for c in sorted(dirty)
            ]
            try:
                await asyncio.to_thread(self._sync_blocking, chunks)
            except BaseException:
                self._dirty |= dirty
                raise

    def _sync_blocking(self, chunks: list[tuple[int, bytes]]) -> None:
        os.fdatasync(self._fd)
        for chunk, states in chunks:
            pwrite_full(self._map_fd, states, _HEADER.size + chunk * _MAP_CHUNK)
        if chunks:
            os.fdatasync(self._map_fd)

    async def aclose(self) -> None:
        """Sync a persisted overlay, then close; closes even if the sync fails."""
        if self._fd < 0:
            return
        try:
            await self.sync()
        finally:
            for fd in (self._fd, self._map_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._map_fd = -1
