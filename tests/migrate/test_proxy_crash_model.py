"""Random client requests, interleaved with the fill and with crashes, against a model.

The model keeps, per block, every version a client made and the version
that was current at the last flush.  Without a crash a read must return the
newest version.  After a crash (the cache keeps only what was flushed, the
bitmap file keeps every write it was given) a block may read as any version
from the flushed one on: a bitmap bit pointing at unflushed data would show
up as the cache's 0xEE garbage, which no version holds.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ovis.block import BlockDevice, Filter
from ovis.block._device import Buffer
from ovis.migrate import PersistentBitmap, ProxyFilter

from .helpers import CrashCache, memory_with, pattern

BLOCK = 4096
NBLOCKS = 16
SIZE = NBLOCKS * BLOCK - 1000  # a short last block


class Yielding(Filter):
    """A source that gives the loop away a few times per read, so the fill interleaves."""

    async def read(self, offset: int, length: int) -> Buffer:
        for _ in range(3):
            await asyncio.sleep(0)
        return await self.next.read(offset, length)


_RANGE = st.integers(0, SIZE - 1).flatmap(
    lambda offset: st.tuples(st.just(offset), st.integers(1, min(3 * BLOCK, SIZE - offset)))
)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), _RANGE, st.integers(1, 10**6)),
        st.tuples(st.just("zero"), _RANGE, st.just(0)),
        st.tuples(st.just("trim"), _RANGE, st.just(0)),
        st.tuples(st.just("read"), _RANGE, st.just(0)),
        st.tuples(st.just("flush"), st.just((0, 1)), st.just(0)),
        st.tuples(st.just("crash"), st.just((0, 1)), st.just(0)),
        st.tuples(st.just("steps"), st.just((0, 1)), st.integers(1, 30)),
    ),
    max_size=30,
)


def _no_garbage(data: bytes) -> bytes:
    return data.replace(bytes([CrashCache.GARBAGE]), b"\x01")


class Model:
    def __init__(self, source: bytes) -> None:
        self.versions = [[source[b * BLOCK : (b + 1) * BLOCK]] for b in range(NBLOCKS)]
        self.flushed = [0] * NBLOCKS

    def current(self) -> bytes:
        return b"".join(v[-1] for v in self.versions)[:SIZE]

    def change(self, offset: int, data: bytes) -> None:
        disk = bytearray(self.current())
        disk[offset : offset + len(data)] = data
        self.adopt(bytes(disk), offset, len(data))

    def adopt(self, disk: bytes, offset: int, length: int) -> None:
        for b in range(offset // BLOCK, -(-(offset + length) // BLOCK)):
            self.versions[b].append(disk[b * BLOCK : (b + 1) * BLOCK])

    def flush(self) -> None:
        self.flushed = [len(v) - 1 for v in self.versions]

    def check_after_crash(self, disk: bytes) -> None:
        for b in range(NBLOCKS):
            block = disk[b * BLOCK : (b + 1) * BLOCK]
            allowed = self.versions[b][self.flushed[b] :]
            assert block in allowed, f"block {b} after a crash holds no allowed version"
            self.versions[b] = [block]
            self.flushed[b] = 0


async def _run(
    ops: list[tuple[str, tuple[int, int], int]], workdir: Path
) -> list[PersistentBitmap]:
    """Run `ops`; returns the bitmaps of crashed proxies, to close once no thread uses them."""
    source_data = _no_garbage(pattern(SIZE, 1))
    source_data = source_data[: 5 * BLOCK] + bytes(3 * BLOCK) + source_data[8 * BLOCK :]
    memory = await memory_with(SIZE, [(0, source_data)])
    model = Model(source_data)
    cache = CrashCache(SIZE)
    cache.yield_in_flush = True
    abandoned: list[PersistentBitmap] = []
    generation = 0

    def open_proxy(cache: CrashCache, bitmap_path: Path) -> ProxyFilter:
        bitmap = PersistentBitmap.open(bitmap_path, block_size=BLOCK, disk_size=SIZE)
        source: BlockDevice = Yielding(memory)
        proxy = ProxyFilter(
            source,
            cache,
            bitmap,
            block_size=BLOCK,
            fill_chunk=2 * BLOCK,
            max_in_flight=2,
            sync_interval=0,
        )
        proxy.start_fill()
        return proxy

    bitmap_path = workdir / "bm0"
    proxy = open_proxy(cache, bitmap_path)
    for op, (offset, length), arg in ops:
        if op == "write":
            data = _no_garbage(pattern(length, arg))
            await proxy.write(offset, data)
            model.change(offset, data)
        elif op == "zero":
            await proxy.zero(offset, length)
            model.change(offset, bytes(length))
        elif op == "trim":
            await proxy.trim(offset, length)
            lo, hi = offset // BLOCK * BLOCK, min(SIZE, -(-(offset + length) // BLOCK) * BLOCK)
            after = bytes(await proxy.read(lo, hi - lo))
            before = model.current()[lo:hi]
            for i, byte in enumerate(after):
                assert byte in (0, before[i]), "trim may only leave old bytes or zeros"
            disk = bytearray(model.current())
            disk[lo:hi] = after
            model.adopt(bytes(disk), lo, hi - lo)
        elif op == "read":
            assert await proxy.read(offset, length) == model.current()[offset : offset + length]
        elif op == "flush":
            await proxy.flush()
            model.flush()
        elif op == "steps":
            for _ in range(arg):
                await asyncio.sleep(0)
        else:  # crash: keep what is durable, open a new proxy on it
            generation += 1
            crashed = workdir / f"bm{generation}"
            shutil.copyfile(bitmap_path, crashed)  # every bitmap write reached the disk
            cache = cache.crash()
            fill = proxy._fill_task
            if fill is not None:
                fill.cancel()
            abandoned.append(proxy._bitmap)  # type: ignore[arg-type]
            bitmap_path = crashed
            proxy = open_proxy(cache, bitmap_path)
            model.check_after_crash(bytes(await proxy.read(0, SIZE)))
    await asyncio.wait_for(proxy.complete.wait(), 5)
    assert bytes(await proxy.read(0, SIZE)) == model.current()
    assert bytes(await memory.read(0, SIZE)) == source_data, "the source never changes"
    await proxy.aclose()
    return abandoned


@settings(max_examples=50, deadline=None)
@given(_OPS)
def test_proxy_matches_model_through_fill_and_crashes(
    ops: list[tuple[str, tuple[int, int], int]],
) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        # asyncio.run waits for the worker threads, so closing afterwards is safe.
        for bitmap in asyncio.run(_run(ops, Path(workdir))):
            bitmap.close()
