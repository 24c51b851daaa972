"""ProxyFilter: post-copy storage migration, xnbd's --proxy mode.

The export's contents live on a remote `source` until they have been copied
into a local `cache` device; a `bitmap` (one bit per `block_size` block)
says which blocks the cache holds.  A set bit is never cleared: from then on
the cache alone is authoritative for that block.

Request semantics, block by block (research/xnbd.md §3.3):
- read / cache: blocks not yet cached are fetched whole from the source,
  stored, marked, then the range is read from the cache.
- write / zero: only the cache is written; the source is never changed.  A
  block the request covers only partly is fetched first (read-modify-write);
  a block it covers whole is claimed, written and marked.
- trim: the blocks it covers whole are zeroed locally and marked; partly
  covered blocks are left alone, which trim's contract allows.
- flush: fdatasync the cache, then persist the bitmap (`PersistentBitmap.sync`
  orders the two).  FUA is a write followed by that flush.
- extents: cached blocks describe the cache, uncached ones the source.

Concurrency: `CacheMap` claims blocks while they are filled, so concurrent
reads of one block fetch it once and a fetch never lands on top of a client
write (see _cachemap.py).

Background fill (`start_fill`): walks the bitmap in `fill_chunk` pieces,
with at most `max_in_flight` in flight, reading at most `max_rate` bytes/s
from the source (ranges the source reports as zero are not read at all),
and syncs the bitmap every `sync_interval` seconds.  It resumes from the
bitmap, so reopening with the same cache and bitmap fetches only what is
missing.  On a source error it stops and records `fill_error`; on-demand
fetches go on working or failing request by request; `start_fill` retries.

Source failure and reconnect (xnbd-bgctl --reconnect): when the source
goes away, reads of uncached blocks (and partial writes over them) fail
with EIO, cached blocks keep working, the fill stops with `fill_error`, and
uncached ranges' extents are reported as data.  `reconnect(source)` swaps
in a new connection to the same disk, restarts a fill that was running and
closes the old one; fetches caught half way are retried on the new source.

Switch: once every block is cached, `complete` is set.  `switch()` persists
the bitmap, turns the filter into a plain pass-through to the cache, waits
for the requests still using the source, and closes it.  Client requests in
flight are not disturbed: none of them needs the source any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from ovis.block._device import BlockDevice, BlockError, Buffer, Capabilities, Extent, MiB
from ovis.nbd._constants import Errno

from ._bitmap import Bitmap, PersistentBitmap
from ._cachemap import CacheMap, extents_of
from ._errors import MigrationError, first_cause
from ._fill import fill_all
from ._rate import RateLimiter

log = logging.getLogger("ovis.migrate.proxy")


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyProgress:
    """A snapshot of a proxy's state, for status output and metrics."""

    total_blocks: int
    cached_blocks: int
    block_size: int
    fetched_bytes: int  # read from the source as data
    zeroed_bytes: int  # filled with zeros without reading data
    filling: bool
    complete: bool
    switched: bool
    fill_error: str | None
    source_error: str | None  # the last failed fetch, until one succeeds

    @property
    def fraction(self) -> float:
        return self.cached_blocks / self.total_blocks if self.total_blocks else 1.0


class ProxyFilter(BlockDevice):
    """The disk of `source`, served from `cache` as blocks arrive; owns all three parts.

    `cache` must be writable and at least as large as `source`; `bitmap`
    must have one bit per `block_size` block of `source` (a plain `Bitmap`
    gives a throw-away proxy that forgets its progress on close).
    """

    def __init__(
        self,
        source: BlockDevice,
        cache: BlockDevice,
        bitmap: Bitmap,
        *,
        block_size: int = 64 * 1024,
        max_rate: float | None = None,
        max_in_flight: int = 8,
        fill_chunk: int = 1 * MiB,
        sync_interval: float = 1.0,
        auto_switch: bool = False,
    ) -> None:
        src, dst = source.capabilities, cache.capabilities
        if block_size & (block_size - 1) or block_size < max(src.min_block, dst.min_block):
            raise ValueError(f"block size {block_size} is not a power of two of at least min_block")
        if not (dst.can_write and dst.can_zero) or cache.size < source.size:
            raise ValueError("the cache must be writable and as large as the source")
        if bitmap.nbits != -(-source.size // block_size):
            raise ValueError(f"the bitmap has {bitmap.nbits} bits, not one per block")
        if isinstance(bitmap, PersistentBitmap) and bitmap.block_size != block_size:
            raise ValueError(f"the bitmap is in {bitmap.block_size}-byte blocks")
        if max_in_flight < 1 or fill_chunk < block_size:
            raise ValueError("need max_in_flight >= 1 and fill_chunk >= block_size")
        self._source, self._cache, self._bitmap = source, cache, bitmap
        self._size = source.size
        self.block_size = block_size
        self.limiter = RateLimiter(max_rate)
        self._max_in_flight = max_in_flight
        self._fill_chunk_blocks = fill_chunk // block_size
        self._sync_interval = sync_interval
        self._auto_switch = auto_switch
        max_block = min(dst.max_block, 32 * MiB)
        self._caps = Capabilities(
            can_fast_zero=False,  # zeroing a partial block may need a fetch: never fast
            can_trim=True,
            can_cache=True,
            can_extents=True,
            # One cache and one bitmap behind every connection (as the cow filter's
            # persisted overlay): a flush anywhere covers every write.
            can_multi_conn=True,
            min_block=max(src.min_block, dst.min_block),
            preferred_block=min(block_size, max_block),
            max_block=max_block,
        )
        self._map = CacheMap(source, cache, bitmap, block_size, on_complete=self._on_complete)
        self.complete = asyncio.Event()
        if bitmap.all_set():
            self.complete.set()
        self._switched = False
        self._closed = False
        self._fill_task: asyncio.Task[None] | None = None
        self._switch_task: asyncio.Task[None] | None = None
        self.fill_error: BaseException | None = None

    # -- facts -------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def switched(self) -> bool:
        return self._switched

    @property
    def progress(self) -> ProxyProgress:
        return ProxyProgress(
            self._bitmap.nbits,
            self._bitmap.count,
            self.block_size,
            self._map.copied.data_bytes,
            self._map.copied.zero_bytes,
            self._fill_task is not None and not self._fill_task.done(),
            self.complete.is_set(),
            self._switched,
            None if self.fill_error is None else str(self.fill_error),
            self._map.source_error,
        )

    def _on_complete(self) -> None:
        if self.complete.is_set():
            return
        self.complete.set()
        log.info("proxy: every block is cached")
        if self._auto_switch and self._switch_task is None:
            self._switch_task = asyncio.get_running_loop().create_task(self.switch())

    # -- the BlockDevice operations ----------------------------------------------------
    async def read(self, offset: int, length: int) -> Buffer:
        if not self._switched:
            first, end = self._map.blocks(offset, length)
            if not self._map.all_cached(first, end):
                await self._map.ensure(first, end)
        return await self._cache.read(offset, length)

    async def cache(self, offset: int, length: int) -> None:
        if not self._switched:
            await self._map.ensure(*self._map.blocks(offset, length))

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        if self._switched:
            await self._cache.write(offset, data, fua=fua)
            return
        length = data.nbytes if isinstance(data, memoryview) else len(data)
        async with self._map.overwriting(offset, length):
            await self._cache.write(offset, data)
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
        if fast:
            raise BlockError(Errno.ENOTSUP, "a proxy cannot promise a fast zero")
        if self._switched:
            await self._cache.zero(offset, length, may_trim=may_trim, fua=fua)
            return
        async with self._map.overwriting(offset, length):
            await self._cache.zero(offset, length, may_trim=may_trim)
        if fua:
            await self.flush()

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        if self._switched:
            await self._cache.trim(offset, length, fua=fua)
            return
        start = -(-offset // self.block_size) * self.block_size
        stop = offset + length
        stop = stop if stop == self._size else stop // self.block_size * self.block_size
        if start < stop:
            # Zero, not trim, below: an uncached block must read as something it held.
            async with self._map.overwriting(start, stop - start, whole_only=True):
                await self._cache.zero(start, stop - start, may_trim=True)
        if fua:
            await self.flush()

    async def flush(self) -> None:
        if isinstance(self._bitmap, PersistentBitmap) and not self._switched:
            await self._bitmap.sync(self._cache.flush)
        else:
            await self._cache.flush()

    async def extents(self, offset: int, length: int) -> list[Extent]:
        if self._switched:
            return await extents_of(self._cache, offset, length)
        return await self._map.extents(offset, length)

    # -- background fill and switch ----------------------------------------------------
    def start_fill(self) -> None:
        """Start (or restart after an error) the background fill; needs a running loop."""
        if self._closed or self._switched:
            raise MigrationError("the proxy is closed or switched")
        if self._fill_task is None or self._fill_task.done():
            self.fill_error = None
            self.limiter.reset()  # slots a stopped fill reserved are not owed
            self._fill_task = asyncio.get_running_loop().create_task(self._fill())

    async def stop_fill(self) -> None:
        """Stop the background fill and wait for its fetches to end; idempotent."""
        task, self._fill_task = self._fill_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _fill(self) -> None:
        started = time.monotonic()
        try:
            await fill_all(
                self._map,
                self.limiter,
                max_in_flight=self._max_in_flight,
                chunk_blocks=self._fill_chunk_blocks,
                sync_interval=self._sync_interval,
                flush=self.flush,
            )
        except Exception as exc:  # the fill stops; requests go on
            self.fill_error = first_cause(exc)
            log.warning("proxy fill stopped: %s", self.fill_error)
            return
        log.info("proxy fill done in %.1f s, %s", time.monotonic() - started, self.progress)
        if self._auto_switch and self._switch_task is None:  # complete when opened
            self._switch_task = asyncio.get_running_loop().create_task(self.switch())

    async def reconnect(self, source: BlockDevice) -> None:
        """Fetch from `source` from now on (a new connection to the same disk).

        Raises ValueError if `source` has another size or a larger
        min_block, MigrationError once switched or closed; `source` is not
        taken over then.  Otherwise the proxy owns it and closes the old one.
        """
        if self._closed or self._switched:
            raise MigrationError("the proxy is closed or switched: it has no source")
        if source.size != self._size:
            raise ValueError(f"the new source has {source.size} bytes, not {self._size}")
        if source.capabilities.min_block > self._caps.min_block:
            raise ValueError(f"the new source needs {source.capabilities.min_block}-byte blocks")
        refill = self._fill_task is not None and not self.complete.is_set()
        await self.stop_fill()
        old = self._map.replace_source(source)
        self._source = source
        if refill:
            self.start_fill()
        log.info("proxy reconnected to a new source")
        # A dead connection closes at once; a hung one must not hold us up.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.aclose(), 5)

    async def switch(self, *, close_source: bool = True) -> None:
        """Leave proxy mode for good: serve from the cache alone.

        Raises MigrationError unless every block is cached.  Persists the
        bitmap first (so a restart also finds the proxy complete), then waits
        for requests still using the source and closes it (`close_source`).
        """
        if self._switched:
            return
        if not self.complete.is_set():
            raise MigrationError(
                f"cannot switch: {self._bitmap.nbits - self._bitmap.count} blocks not cached"
            )
        await self.stop_fill()
        await self.flush()
        self._switched = True
        self._map.retire_source()
        await self._map.source_idle.wait()
        if close_source:
            await self._source.aclose()
        log.info("proxy switched to target mode")

    async def aclose(self) -> None:
        """Stop the fill, flush (cache, then bitmap), close everything; idempotent.

        Closes the cache, the source and the bitmap even if the flush fails.
        """
        if self._closed:
            return
        self._closed = True
        try:
            await self.stop_fill()
            if self._switch_task is not None and self._switch_task is not asyncio.current_task():
                with contextlib.suppress(Exception):
                    await self._switch_task
            await self.flush()
        finally:
            try:
                await self._cache.aclose()
            finally:
                try:
                    await self._source.aclose()
                finally:
                    if isinstance(self._bitmap, PersistentBitmap):
                        self._bitmap.close()
